//! Point-in-time recovery as decisions over plain data: which base backup a
//! restore starts from, and the recovery settings PostgreSQL reads from
//! `postgresql.auto.conf`. Pure; the restore job does the I/O.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use thiserror::Error;

use super::ids::BackupId;
use super::manifest::PhysicalFacts;
use super::wal::Lsn;

/// Where recovery stops. `Latest` replays every archived segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    Time(DateTime<Utc>),
    Lsn(Lsn),
    /// A restore point made with `pg_create_restore_point`.
    Name(String),
    Xid(u64),
    /// The first consistent point: the end of the base backup.
    Immediate,
    Latest,
}

impl RecoveryTarget {
    /// The target as one word and value, for output, the catalog and the journal.
    pub fn describe(&self) -> String {
        match self {
            RecoveryTarget::Time(t) => {
                format!("time {}", t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }
            RecoveryTarget::Lsn(l) => format!("lsn {l}"),
            RecoveryTarget::Name(n) => format!("name {n}"),
            RecoveryTarget::Xid(x) => format!("xid {x}"),
            RecoveryTarget::Immediate => "immediate".into(),
            RecoveryTarget::Latest => "latest".into(),
        }
    }
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// `recovery_target_action`: what the server does once it reaches the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetAction {
    #[default]
    Promote,
    Pause,
    Shutdown,
}

impl TargetAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

/// One committed base backup as selection sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseBackup {
    pub id: BackupId,
    pub finished_at: DateTime<Utc>,
    pub facts: PhysicalFacts,
}

#[derive(Debug, Error, PartialEq)]
pub enum SelectionError {
    #[error("the job has no base backup: run `vigil backup JOB` first")]
    NoBackups,
    #[error(
        "no base backup of the job's current cluster (system {system}) ended before the target ({target}); the oldest ended at {oldest_finished} (stop LSN {oldest_stop}): choose a later target"
    )]
    NoneBeforeTarget {
        target: String,
        system: String,
        oldest_finished: DateTime<Utc>,
        oldest_stop: Lsn,
    },
    #[error(
        "base backup {id} ends after the target ({target}): it finished at {finished_at}, stop LSN {stop_lsn}, and recovery cannot stop before a backup is consistent; choose an older backup or drop --backup"
    )]
    BackupEndsAfterTarget {
        id: BackupId,
        target: String,
        finished_at: DateTime<Utc>,
        stop_lsn: Lsn,
    },
}

/// Whether `b` is consistent before `target` (a backup is consistent only
/// once replay passes its stop LSN, which it reached before `finished_at`).
/// Names and xids cannot be placed without reading WAL: any backup may do.
fn ends_before(b: &BaseBackup, target: &RecoveryTarget) -> bool {
    match target {
        RecoveryTarget::Time(t) => b.finished_at <= *t,
        RecoveryTarget::Lsn(l) => b.facts.stop_lsn <= *l,
        RecoveryTarget::Name(_)
        | RecoveryTarget::Xid(_)
        | RecoveryTarget::Immediate
        | RecoveryTarget::Latest => true,
    }
}

/// Newest first, by finish time then id (the order everything else uses).
fn newest_first(backups: &[BaseBackup]) -> Vec<&BaseBackup> {
    let mut sorted: Vec<&BaseBackup> = backups.iter().collect();
    sorted.sort_by(|a, b| {
        b.finished_at
            .cmp(&a.finished_at)
            .then_with(|| b.id.cmp(&a.id))
    });
    sorted
}

/// The newest base backup that ends before `target`. Only backups of the
/// cluster the newest backup came from count (the archive holds that
/// cluster's WAL; a re-initialised source starts a new system and its old
/// backups are chosen with `--backup` only). For a restore point name or an
/// xid the newest backup is a guess: `--backup` picks explicitly.
pub fn choose<'a>(
    backups: &'a [BaseBackup],
    target: &RecoveryTarget,
) -> Result<&'a BaseBackup, SelectionError> {
    let sorted = newest_first(backups);
    let newest = sorted.first().ok_or(SelectionError::NoBackups)?;
    let system = &newest.facts.system_identifier;
    let same_system: Vec<&BaseBackup> = sorted
        .iter()
        .copied()
        .filter(|b| &b.facts.system_identifier == system)
        .collect();
    if let Some(found) = same_system.iter().find(|b| ends_before(b, target)) {
        return Ok(found);
    }
    let oldest = same_system.last().unwrap_or(newest);
    Err(SelectionError::NoneBeforeTarget {
        target: target.describe(),
        system: system.clone(),
        oldest_finished: oldest.finished_at,
        oldest_stop: oldest.facts.stop_lsn,
    })
}

/// Checks a backup named with `--backup` against the target.
pub fn check_chosen(b: &BaseBackup, target: &RecoveryTarget) -> Result<(), SelectionError> {
    if ends_before(b, target) {
        return Ok(());
    }
    Err(SelectionError::BackupEndsAfterTarget {
        id: b.id.clone(),
        target: target.describe(),
        finished_at: b.finished_at,
        stop_lsn: b.facts.stop_lsn,
    })
}

/// What a restore writes for PostgreSQL to read.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoverySettings {
    /// The vigil binary, as an absolute path.
    pub vigil: String,
    /// The config file, as an absolute path.
    pub config: String,
    pub job: String,
    pub target: RecoveryTarget,
    pub action: TargetAction,
}

/// Quotes a word for `/bin/sh` (PostgreSQL runs `restore_command` through it).
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `restore_command` expands `%f`, `%p` and `%%`: a literal `%` is doubled.
fn escape_percent(text: &str) -> String {
    text.replace('%', "%%")
}

/// A string literal for postgresql.conf: quotes doubled, backslashes escaped.
pub fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', r"\\").replace('\'', "''"))
}

/// The command PostgreSQL runs to fetch each WAL file.
pub fn restore_command(s: &RecoverySettings) -> String {
    let words = [
        shell_quote(&s.vigil),
        "--config".to_owned(),
        shell_quote(&s.config),
        "wal-fetch".to_owned(),
        shell_quote(&s.job),
    ];
    format!("{} %f %p", escape_percent(&words.join(" ")))
}

/// A timestamp PostgreSQL's timestamptz input reads unambiguously.
fn pg_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

/// The `postgresql.auto.conf` lines, in order.
pub fn settings_lines(s: &RecoverySettings) -> Vec<String> {
    let mut lines = vec![format!(
        "restore_command = {}",
        conf_quote(&restore_command(s))
    )];
    let target = match &s.target {
        RecoveryTarget::Time(t) => Some(("recovery_target_time", pg_timestamp(*t))),
        RecoveryTarget::Lsn(l) => Some(("recovery_target_lsn", l.to_string())),
        RecoveryTarget::Name(n) => Some(("recovery_target_name", n.clone())),
        RecoveryTarget::Xid(x) => Some(("recovery_target_xid", x.to_string())),
        RecoveryTarget::Immediate => Some(("recovery_target", "immediate".to_owned())),
        RecoveryTarget::Latest => None,
    };
    if let Some((key, value)) = target {
        lines.push(format!("{key} = {}", conf_quote(&value)));
        lines.push(format!(
            "recovery_target_action = {}",
            conf_quote(s.action.as_str())
        ));
    }
    lines.push("recovery_target_timeline = 'latest'".to_owned());
    lines
}

/// The base backup's `postgresql.auto.conf` with the recovery settings
/// appended: later lines win, so the source's own settings stay readable.
pub fn render_auto_conf(existing: &str, s: &RecoverySettings, backup: &str) -> String {
    let mut out = existing.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!(
        "# Added by vigil restore of {} (backup {backup}, target {})\n",
        s.job, s.target
    ));
    for line in settings_lines(s) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn backup(id: &str, finished: &str, stop: &str, system: &str) -> BaseBackup {
        BaseBackup {
            id: id.into(),
            finished_at: at(finished),
            facts: PhysicalFacts {
                start_lsn: "0/2000028".parse().unwrap(),
                stop_lsn: stop.parse().unwrap(),
                timeline: 1,
                system_identifier: system.into(),
                wal_segment_size: crate::core::wal::DEFAULT_SEGMENT_SIZE,
                label: String::new(),
                tablespaces: vec![],
            },
        }
    }

    fn three() -> Vec<BaseBackup> {
        vec![
            backup("b1", "2026-11-20T02:00:00Z", "0/3000000", "7"),
            backup("b3", "2026-11-22T02:00:00Z", "0/9000000", "7"),
            backup("b2", "2026-11-21T02:00:00Z", "0/6000000", "7"),
        ]
    }

    #[test]
    fn a_time_target_picks_the_newest_backup_finished_before_it() {
        let b = three();
        let pick = |t: &str| choose(&b, &RecoveryTarget::Time(at(t))).map(|b| b.id.to_string());
        assert_eq!(pick("2026-11-21T12:00:00Z").unwrap(), "b2");
        // Finished exactly at the target: consistent by then.
        assert_eq!(pick("2026-11-21T02:00:00Z").unwrap(), "b2");
        assert_eq!(pick("2026-11-21T01:59:59Z").unwrap(), "b1");
        assert_eq!(pick("2030-01-01T00:00:00Z").unwrap(), "b3");
        let err = pick("2026-11-19T00:00:00Z").unwrap_err();
        assert!(
            matches!(err, SelectionError::NoneBeforeTarget { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("0/3000000"), "{err}");
    }

    #[test]
    fn an_lsn_target_compares_stop_lsns() {
        let b = three();
        let pick = |l: &str| {
            choose(&b, &RecoveryTarget::Lsn(l.parse().unwrap())).map(|b| b.id.to_string())
        };
        assert_eq!(pick("0/6000000").unwrap(), "b2");
        assert_eq!(pick("0/5FFFFFF").unwrap(), "b1");
        assert_eq!(pick("1/0").unwrap(), "b3");
        assert!(pick("0/1000000").is_err());
    }

    #[test]
    fn names_xids_immediate_and_latest_take_the_newest() {
        let b = three();
        for t in [
            RecoveryTarget::Name("before-migration".into()),
            RecoveryTarget::Xid(1234),
            RecoveryTarget::Immediate,
            RecoveryTarget::Latest,
        ] {
            assert_eq!(choose(&b, &t).unwrap().id.as_str(), "b3", "{t}");
        }
        assert_eq!(
            choose(&[], &RecoveryTarget::Latest),
            Err(SelectionError::NoBackups)
        );
    }

    #[test]
    fn only_backups_of_the_newest_backups_cluster_are_chosen() {
        let mut b = three();
        b.push(backup("new", "2026-11-23T02:00:00Z", "0/A000000", "8"));
        // b3 stopped before this LSN, but belongs to the old cluster.
        let err = choose(&b, &RecoveryTarget::Lsn("0/9000000".parse().unwrap())).unwrap_err();
        assert!(err.to_string().contains("system 8"), "{err}");
        assert_eq!(
            choose(&b, &RecoveryTarget::Latest).unwrap().id.as_str(),
            "new"
        );
    }

    #[test]
    fn an_explicit_backup_must_end_before_the_target() {
        let b = three();
        let t = RecoveryTarget::Time(at("2026-11-21T12:00:00Z"));
        assert_eq!(check_chosen(&b[0], &t), Ok(()));
        let err = check_chosen(&b[1], &t).unwrap_err();
        assert!(
            err.to_string()
                .contains("base backup b3 ends after the target"),
            "{err}"
        );
        assert_eq!(check_chosen(&b[1], &RecoveryTarget::Immediate), Ok(()));
    }

    fn settings(target: RecoveryTarget) -> RecoverySettings {
        RecoverySettings {
            vigil: "/usr/bin/vigil".into(),
            config: "/etc/vigil/config.toml".into(),
            job: "orders".into(),
            target,
            action: TargetAction::Promote,
        }
    }

    #[test]
    fn renders_each_target() {
        let lines = |t| settings_lines(&settings(t)).join("\n");
        assert_eq!(
            lines(RecoveryTarget::Time(at("2026-11-21T12:00:00.25Z"))),
            "restore_command = '/usr/bin/vigil --config /etc/vigil/config.toml wal-fetch orders %f %p'\n\
             recovery_target_time = '2026-11-21 12:00:00.250000+00'\n\
             recovery_target_action = 'promote'\n\
             recovery_target_timeline = 'latest'"
        );
        assert!(
            lines(RecoveryTarget::Lsn("0/3000060".parse().unwrap()))
                .contains("recovery_target_lsn = '0/3000060'\n")
        );
        assert!(
            lines(RecoveryTarget::Name("it's".into())).contains("recovery_target_name = 'it''s'\n")
        );
        assert!(lines(RecoveryTarget::Xid(745)).contains("recovery_target_xid = '745'\n"));
        assert!(lines(RecoveryTarget::Immediate).contains("recovery_target = 'immediate'\n"));
        let latest = lines(RecoveryTarget::Latest);
        assert!(!latest.contains("recovery_target_action"), "{latest}");
        assert!(latest.ends_with("recovery_target_timeline = 'latest'"));
        let mut paused = settings(RecoveryTarget::Immediate);
        paused.action = TargetAction::Pause;
        assert!(settings_lines(&paused).contains(&"recovery_target_action = 'pause'".to_owned()));
    }

    #[test]
    fn restore_command_quotes_for_the_shell_the_conf_file_and_percent() {
        let mut s = settings(RecoveryTarget::Latest);
        s.vigil = "/opt/my vigil/100%/vigil".into();
        s.config = "/etc/o'brien.toml".into();
        assert_eq!(
            restore_command(&s),
            r"'/opt/my vigil/100%%/vigil' --config '/etc/o'\''brien.toml' wal-fetch orders %f %p"
        );
        assert_eq!(
            settings_lines(&s)[0],
            r"restore_command = '''/opt/my vigil/100%%/vigil'' --config ''/etc/o''\\''''brien.toml'' wal-fetch orders %f %p'"
        );
    }

    #[test]
    fn settings_are_appended_after_the_backups_own() {
        let s = settings(RecoveryTarget::Immediate);
        let out = render_auto_conf("# Do not edit\nwork_mem = '8MB'", &s, "20261121T020000Z");
        assert!(
            out.starts_with("# Do not edit\nwork_mem = '8MB'\n# Added by vigil restore of orders"),
            "{out}"
        );
        assert!(
            out.ends_with("recovery_target_timeline = 'latest'\n"),
            "{out}"
        );
        assert!(render_auto_conf("", &s, "x").starts_with("# Added by vigil"));
    }
}
