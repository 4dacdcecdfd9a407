//! Checks of `[jobs.<name>.drill]`: pure but for two looks at the disk
//! (a physical target inside a data directory, `pg_bin_dir`'s `pg_ctl`),
//! every problem at once. A drill drops its target, so a target that is
//! the job's own source is refused here, before anything runs.

use std::path::Path;

use tokio_postgres::config::Host;

use super::{Databases, DrillConfig, JobConfig, JobKind};
use crate::core::schedule::Schedule;

/// One server a connection string can reach: host (normalised) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// Loopback names, addresses and Unix sockets all reach this machine's
/// servers: they count as one host, so `localhost` and `127.0.0.1` (or a
/// socket directory) with the same port are the same server.
const LOCAL: &str = "localhost";

fn normalise(host: &Host) -> String {
    match host {
        Host::Unix(_) => LOCAL.to_owned(),
        Host::Tcp(name) => {
            let name = name.trim_matches(['[', ']']).to_ascii_lowercase();
            let loopback = name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
            if loopback || name == LOCAL {
                LOCAL.to_owned()
            } else {
                name
            }
        }
    }
}

/// Every server `config` may connect to. No host is libpq's default, the
/// local socket; no port is 5432; one port applies to every host.
pub fn endpoints(config: &tokio_postgres::Config) -> Vec<Endpoint> {
    let hosts: Vec<String> = match config.get_hosts() {
        [] => vec![LOCAL.to_owned()],
        hosts => hosts.iter().map(normalise).collect(),
    };
    let ports = config.get_ports();
    hosts
        .into_iter()
        .enumerate()
        .map(|(i, host)| Endpoint {
            host,
            port: match ports {
                [] => 5432,
                [one] => *one,
                many => many.get(i).copied().unwrap_or(5432),
            },
        })
        .collect()
}

/// Whether restoring into `target_db` at `target` could write into one of
/// the job's source databases: same server, and a database the job backs
/// up (any database when it backs up `"all"`).
pub fn is_source(
    source: &tokio_postgres::Config,
    databases: &Databases,
    target: &tokio_postgres::Config,
    target_db: &str,
) -> bool {
    let sources = endpoints(source);
    let same_server = endpoints(target).iter().any(|t| sources.contains(t));
    let same_db = match databases {
        Databases::All => true,
        Databases::List(list) => {
            list.iter().any(|d| d == target_db) || source.get_dbname() == Some(target_db)
        }
    };
    same_server && same_db
}

pub fn validate_drills(
    jobs: &std::collections::BTreeMap<String, JobConfig>,
    problem: &mut dyn FnMut(String, String),
) {
    for (name, job) in jobs {
        if let Some(drill) = &job.drill {
            let key = |k: &str| format!("jobs.{name}.drill.{k}");
            validate_drill(job, drill, &mut |k, m| problem(key(k), m));
        }
    }
}

fn validate_drill(job: &JobConfig, drill: &DrillConfig, problem: &mut dyn FnMut(&str, String)) {
    if let Err(e) = Schedule::required(drill.schedule.as_deref(), drill.every, &job.timezone) {
        problem(
            "schedule",
            format!(
                "{e}: set `schedule` (cron with seconds) or `every` (e.g. \"1day\") for the drill"
            ),
        );
    }
    for (i, sql) in drill.check_sql.iter().enumerate() {
        if sql.trim().is_empty() {
            problem("check_sql", format!("query {} is empty", i + 1));
        }
    }
    if drill.max_rto.is_some_and(|d| d.is_zero()) {
        problem("max_rto", "must be longer than 0s".into());
    }
    if drill.target.expose().is_empty() {
        let example = match job.kind {
            JobKind::PostgresPhysical => "\"/var/lib/vigil/drill\" (a scratch directory)",
            _ => "\"postgres://vigil@127.0.0.1:5432/orders_drill\" (a scratch database)",
        };
        problem("target", format!("is required, e.g. target = {example}"));
        return;
    }
    match job.kind {
        JobKind::Postgres => validate_logical(job, drill, problem),
        JobKind::PostgresPhysical => validate_physical(drill, problem),
        JobKind::Files | JobKind::Mirror => problem(
            "target",
            format!(
                "restore drills are for kind = \"postgres\" and \"postgres-physical\" jobs; a {} job's backups are proven by `vigil verify` (remove [jobs.<name>.drill])",
                job.kind.as_str()
            ),
        ),
    }
}

/// A scratch database that is not the source; the database restored is
/// one the backup holds.
fn validate_logical(job: &JobConfig, drill: &DrillConfig, problem: &mut dyn FnMut(&str, String)) {
    if drill.pg_bin_dir.is_some() {
        problem(
            "pg_bin_dir",
            "is for kind = \"postgres-physical\" (a logical drill runs pg_restore)".into(),
        );
    }
    let several = match &job.databases {
        Databases::All => true,
        Databases::List(list) => list.len() > 1,
    };
    match (&drill.database, &job.databases) {
        (None, _) if several => problem(
            "database",
            "the job backs up several databases: name the one the drill restores".into(),
        ),
        (Some(db), Databases::List(list)) if !list.contains(db) => problem(
            "database",
            format!(
                "`{db}` is not one of the job's databases ({})",
                list.join(", ")
            ),
        ),
        _ => {}
    }
    let target = match super::conninfo::parse(drill.target.expose()) {
        Ok(t) => t,
        Err(e) => {
            problem(
                "target",
                format!(
                    "is not a PostgreSQL connection string: {e} (e.g. postgres://vigil@127.0.0.1:5432/orders_drill)"
                ),
            );
            return;
        }
    };
    let Some(target_db) = target.pg.get_dbname() else {
        problem(
            "target",
            "must name the scratch database (postgres://HOST:PORT/DBNAME)".into(),
        );
        return;
    };
    if target_db == "postgres" || target_db.starts_with("template") {
        problem(
            "target",
            format!(
                "`{target_db}` is a system database: name a scratch database the drill may create and drop"
            ),
        );
    }
    let Ok(source) = super::conninfo::parse(job.source.expose()) else {
        return; // `source` itself is reported
    };
    if is_source(&source.pg, &job.databases, &target.pg, target_db) {
        let host = super::conninfo::describe_host(&target.pg);
        problem(
            "target",
            format!(
                "{host}/{target_db} is the job's source (`source` = {}, databases {}): a drill drops its target; point it at a scratch database on another server or under another name",
                super::conninfo::describe_host(&source.pg),
                describe_databases(&job.databases)
            ),
        );
    }
}

fn describe_databases(databases: &Databases) -> String {
    match databases {
        Databases::All => "\"all\"".into(),
        Databases::List(list) => list.join(", "),
    }
}

/// An absolute scratch directory outside any data directory.
fn validate_physical(drill: &DrillConfig, problem: &mut dyn FnMut(&str, String)) {
    let target = Path::new(drill.target.expose());
    if !target.is_absolute() {
        problem(
            "target",
            format!(
                "`{}` must be an absolute directory (a scratch directory the drill starts a throwaway PostgreSQL in)",
                target.display()
            ),
        );
        return;
    }
    if target.parent().is_none() {
        problem("target", "must not be `/`".into());
    }
    if let Some(data) = target.ancestors().find(|d| d.join("PG_VERSION").is_file()) {
        problem(
            "target",
            format!(
                "`{}` is inside the PostgreSQL data directory {}: point it at a scratch directory",
                target.display(),
                data.display()
            ),
        );
    }
    if let Some(dir) = &drill.pg_bin_dir
        && !dir.join("pg_ctl").is_file()
    {
        problem(
            "pg_bin_dir",
            format!(
                "{} has no pg_ctl (e.g. /usr/lib/postgresql/16/bin)",
                dir.display()
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;
    use crate::config::parse;

    fn pg(s: &str) -> tokio_postgres::Config {
        crate::config::conninfo::parse(s).unwrap().pg
    }

    #[test]
    fn url_and_keyword_forms_and_loopback_names_compare_equal() {
        let list = Databases::List(vec!["orders".into()]);
        let source = pg("postgres://backup@localhost/orders");
        for target in [
            "postgres://other@127.0.0.1:5432/orders",
            "host=127.0.0.1 port=5432 dbname=orders",
            "host=/var/run/postgresql dbname=orders",
            "postgresql://[::1]:5432/orders",
            "dbname=orders",
        ] {
            assert!(is_source(&source, &list, &pg(target), "orders"), "{target}");
        }
        for (target, db) in [
            ("postgres://127.0.0.1:5433/orders", "orders"),
            ("postgres://127.0.0.1:5432/orders_drill", "orders_drill"),
            ("postgres://db2.internal/orders", "orders"),
        ] {
            assert!(!is_source(&source, &list, &pg(target), db), "{target}");
        }
        // "all": every database of the source server is a source.
        let target = pg("postgres://LOCALHOST/scratch");
        assert!(is_source(&source, &Databases::All, &target, "scratch"));
    }

    const BASE: &str = "[catalog]\nurl = \"postgres://vigil@127.0.0.1/vigil\"\n[repositories.local]\nscheme = \"fs\"\noptions = { root = \"/srv/backups\" }\n";

    /// Each problem's key, position and message.
    type Found = Vec<(String, Option<(usize, usize)>, String)>;

    fn problems(job: &str, drill: &str) -> Found {
        let src = format!(
            "{BASE}[jobs.orders]\n{job}repository = \"local\"\nevery = \"1h\"\n[jobs.orders.drill]\n{drill}"
        );
        match parse(&src, Path::new("c.toml"), &HashMap::new()) {
            Ok(_) => vec![],
            Err(e) => e
                .problems
                .into_iter()
                .map(|p| (p.key, p.position, p.message))
                .collect(),
        }
    }

    const LOGICAL: &str = "kind = \"postgres\"\nsource = \"postgres://backup@127.0.0.1:5432/orders\"\ndatabases = [\"orders\"]\n";

    #[test]
    fn a_target_that_is_the_source_is_refused_naming_both_with_its_line() {
        let found = problems(
            LOGICAL,
            "every = \"1day\"\ntarget = \"host=localhost dbname=orders user=x\"\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        let (key, position, message) = &found[0];
        assert_eq!(key, "jobs.orders.drill.target");
        assert_eq!(position.map(|p| p.0), Some(14));
        assert!(message.contains("localhost:5432/orders"), "{message}");
        assert!(message.contains("127.0.0.1:5432"), "{message}");
        assert!(
            problems(
                LOGICAL,
                "every = \"1day\"\ntarget = \"postgres://x@127.0.0.1/orders_drill\"\n"
            )
            .is_empty()
        );
    }

    /// config.toml.example's drill with only the keys it sets uncommented
    /// (`every`, `target`): valid, with the default check.
    #[test]
    fn the_examples_drill_validates_with_its_defaults() {
        let example = include_str!("../../config.toml.example");
        let drill: String = example
            .lines()
            .skip_while(|l| *l != "# [jobs.orders.drill]")
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with("every =") || l.starts_with("target = \"postgres"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(drill.lines().count(), 2, "{drill}");
        assert!(problems(LOGICAL, &drill).is_empty(), "{drill}");
        let src = format!(
            "{BASE}[jobs.orders]\n{LOGICAL}repository = \"local\"\nevery = \"1h\"\n[jobs.orders.drill]\n{drill}"
        );
        let config = parse(&src, Path::new("c.toml"), &HashMap::new()).unwrap();
        let parsed = config.jobs["orders"].drill.clone().unwrap();
        assert_eq!(parsed.every, Some(std::time::Duration::from_secs(86_400)));
        assert_eq!((parsed.max_rto, parsed.database), (None, None));
        assert_eq!(
            crate::config::drill_check_queries(&parsed.check_sql),
            ["SELECT true"]
        );
    }

    #[test]
    fn drills_need_a_schedule_a_target_and_a_kind_that_restores() {
        let keys = |job: &str, drill: &str| -> Vec<String> {
            problems(job, drill).into_iter().map(|p| p.0).collect()
        };
        assert_eq!(
            keys(LOGICAL, "target = \"postgres://h/scratch\"\n"),
            ["jobs.orders.drill.schedule"]
        );
        assert_eq!(
            keys(LOGICAL, "every = \"1day\"\n"),
            ["jobs.orders.drill.target"]
        );
        assert_eq!(
            keys(LOGICAL, "every = \"1day\"\ntarget = \"postgres://h\"\n"),
            ["jobs.orders.drill.target"]
        );
        let files = "kind = \"files\"\npaths = [\"/srv\"]\n";
        assert_eq!(
            keys(files, "every = \"1day\"\ntarget = \"/tmp/x\"\n"),
            ["jobs.orders.drill.target"]
        );
        let physical = "kind = \"postgres-physical\"\nsource = \"postgres://r@db/postgres\"\n";
        assert_eq!(
            keys(physical, "every = \"1day\"\ntarget = \"relative/dir\"\n"),
            ["jobs.orders.drill.target"]
        );
        assert!(keys(physical, "every = \"1day\"\ntarget = \"/var/tmp/drill\"\n").is_empty());
        let several = LOGICAL.replace("[\"orders\"]", "[\"orders\", \"billing\"]");
        assert_eq!(
            keys(
                &several,
                "every = \"1day\"\ntarget = \"postgres://h/scratch\"\n"
            ),
            ["jobs.orders.drill.database"]
        );
        assert!(
            keys(
                &several,
                "every = \"1day\"\ntarget = \"postgres://h/scratch\"\ndatabase = \"billing\"\n"
            )
            .is_empty()
        );
    }
}
