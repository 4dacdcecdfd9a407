//! `vigil audit verify` and `vigil audit show`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

mod show;

use super::args::AuditCommand;
use super::error::{AuditError, CliError, CopyError};
use super::exit::Exit;
use super::{Invocation, finish, with_config_as};
use crate::config::Config;
use crate::core::journal_record::Record;
use crate::journal::segment;
use crate::journal::signing::unsigned_checkpoint_warning;
use crate::journal::verify::catalog::{check_pin, compare_with_local};
use crate::journal::verify::{
    Anchor, Report, SegmentInput, TableRow, check_signatures, signing_key_named, verify_segments,
    verify_table,
};

/// How long `audit verify` waits for the catalog's copy.
const CATALOG_TIMEOUT: Duration = Duration::from_secs(5);

/// `vigil audit verify|keygen|show`.
pub async fn dispatch(invocation: &Invocation, command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify {
            from_catalog,
            public_key,
            json,
        } => {
            with_config_as(invocation, json, |config| async move {
                verify(&config, from_catalog, public_key.as_deref(), json).await
            })
            .await
        }
        AuditCommand::Keygen {
            private_key,
            public,
        } => finish(keygen(&private_key, public.as_deref())),
        AuditCommand::Show { since, event, json } => {
            let since = match since.as_deref().map(show::parse_since).transpose() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("vigil audit show: --since {e}");
                    if json {
                        super::print_json_error("usage", &format!("--since {e}"));
                    }
                    return ExitCode::from(Exit::Usage.code());
                }
            };
            with_config_as(invocation, json, |config| async move {
                show::show(&config, since, event.as_deref(), json)
            })
            .await
        }
    }
}

/// Reads every segment of the journal directory, holding the writers'
/// lock (shared) so no line is read half-written.
fn read_segments(config: &Config) -> Result<Vec<SegmentInput>, AuditError> {
    let dir = config.journal_dir();
    let lock = std::fs::File::open(dir.join(segment::LOCK_FILE)).ok();
    if let Some(lock) = &lock {
        lock.lock_shared().map_err(|source| AuditError::Lock {
            dir: dir.clone(),
            source,
        })?;
    }
    let mut out = Vec::new();
    let segments = segment::list(&dir).map_err(|source| AuditError::List {
        dir: dir.clone(),
        source,
    })?;
    for (n, path) in segments {
        let (lines, fragment) =
            segment::read_from(&path, 0).map_err(|source| AuditError::Read {
                path: path.clone(),
                source,
            })?;
        out.push(SegmentInput {
            name: segment::segment_name(n),
            lines,
            fragment,
        });
    }
    Ok(out)
}

fn journal_of(segments: &[SegmentInput]) -> Option<String> {
    segments
        .iter()
        .flat_map(|s| s.lines.first())
        .find_map(|l| serde_json::from_str::<Record>(&l.text).ok())
        .map(|r| r.journal)
}

/// What the catalog holds for this instance: the pinned journal id and
/// the rows of the journal verified (the local one, else the pinned one).
struct CatalogCopy {
    pinned: Option<String>,
    journal: String,
    rows: Vec<TableRow>,
}

/// Reads this instance's pin and its journal's rows, or says why not.
async fn catalog_copy(
    config: &Config,
    instance: &str,
    local: Option<&str>,
) -> Result<CatalogCopy, CopyError> {
    let pool = super::session::probe(config, CATALOG_TIMEOUT).await?;
    let addr = crate::catalog::address(&config.catalog);
    let client = pool.get().await.map_err(|source| CopyError::Connect {
        addr: addr.clone(),
        source,
    })?;
    let pinned = crate::journal::ship::pinned(&client, instance)
        .await
        .map_err(|source| CopyError::Pin {
            instance: instance.to_owned(),
            source,
        })?;
    // Never "the newest journal in the catalog": that may be another host's.
    let journal = local
        .map(str::to_owned)
        .or_else(|| pinned.clone())
        .ok_or_else(|| CopyError::NothingToVerify {
            addr,
            instance: instance.to_owned(),
        })?;
    let rows = client
        .query(
            "SELECT seq, record FROM vigil.audit_log WHERE journal = $1::text::uuid ORDER BY seq",
            &[&journal],
        )
        .await
        .map_err(|source| CopyError::Query { source })?;
    let rows = rows
        .iter()
        .map(|r| TableRow {
            seq: r.get::<_, i64>(0) as u64,
            record: r.get::<_, Option<String>>(1).unwrap_or_default(),
        })
        .collect();
    Ok(CatalogCopy {
        pinned,
        journal,
        rows,
    })
}

/// The journal heads recorded in every configured job's manifests.
async fn manifest_anchors(config: &Config, warnings: &mut Vec<String>) -> Vec<Anchor> {
    let mut anchors = Vec::new();
    for (job, job_config) in &config.jobs {
        let repo = match crate::repo::Repository::open(
            &job_config.repository,
            &config.repositories[&job_config.repository],
        ) {
            Ok(r) => r,
            Err(e) => {
                warnings.push(format!("job `{job}`: cannot open its repository: {e}"));
                continue;
            }
        };
        match repo.list(job).await {
            Ok(listing) => anchors.extend(listing.backups.iter().filter_map(|m| {
                let head = m.journal_head.as_ref()?;
                Some(Anchor {
                    source: format!("backup {job}/{}", m.backup_id),
                    journal: head.journal.clone(),
                    seq: head.seq,
                    hash: head.hash.clone(),
                })
            })),
            Err(e) => warnings.push(format!("job `{job}`: cannot list its backups: {e}")),
        }
    }
    anchors
}

/// `vigil audit verify [--from-catalog] [--public-key FILE] [--json]`:
/// exit 1 on any problem.
pub async fn verify(
    config: &Config,
    from_catalog: bool,
    public_key: Option<&Path>,
    json: bool,
) -> Result<(), CliError> {
    // A bad key file is the caller's mistake: say so before reading anything.
    let key = public_key
        .map(crate::journal::sign::load_verifying_key)
        .transpose()?;
    let mut warnings = Vec::new();
    let anchors = manifest_anchors(config, &mut warnings).await;
    let instance = super::session::instance(config);
    let (mut report, lines) = if from_catalog {
        verify_catalog_copy(config, &instance, &anchors).await?
    } else {
        verify_local(config, &instance, &anchors, &mut warnings).await?
    };
    match &key {
        Some(key) => check_signatures(
            &mut report,
            lines.iter().map(String::as_str),
            key,
            config.journal.checkpoint_interval,
            if from_catalog {
                "catalog"
            } else {
                "journal files"
            },
        ),
        None => {
            remind_of_signatures(&mut report, lines.iter().map(String::as_str));
            report.warnings.extend(unsigned_checkpoint_warning(
                lines.iter().map(String::as_str),
            ));
        }
    }
    report.warnings.extend(warnings);
    print_report(&report, from_catalog, json)?;
    if !report.ok() {
        return Err(AuditError::Failed.into());
    }
    Ok(())
}

/// `--from-catalog`: the catalog's copy of this instance's journal, held
/// to the local files that remain and to the pin. Returns the report and
/// the lines verified.
async fn verify_catalog_copy(
    config: &Config,
    instance: &str,
    anchors: &[Anchor],
) -> Result<(Report, Vec<String>), AuditError> {
    let segments = read_segments(config).unwrap_or_default();
    let copy = catalog_copy(config, instance, journal_of(&segments).as_deref())
        .await
        .map_err(AuditError::FromCatalog)?;
    let mut report = verify_table(&copy.rows, anchors);
    report.journal.get_or_insert(copy.journal);
    compare_with_local(&mut report, &copy.rows, &segments);
    check_pin(&mut report, instance, copy.pinned.as_deref());
    Ok((report, copy.rows.into_iter().map(|r| r.record).collect()))
}

/// The local files, compared with the catalog's copy and its pin when the
/// catalog answers. Returns the report and the lines verified.
async fn verify_local(
    config: &Config,
    instance: &str,
    anchors: &[Anchor],
    warnings: &mut Vec<String>,
) -> Result<(Report, Vec<String>), AuditError> {
    let before = read_segments(config)?;
    if before.is_empty() {
        return Err(AuditError::NoSegments {
            dir: config.journal_dir(),
        });
    }
    let copy = match catalog_copy(config, instance, journal_of(&before).as_deref()).await {
        Ok(copy) => Some(copy),
        Err(e) => {
            warnings.push(format!("catalog not compared: {e}"));
            None
        }
    };
    // A running daemon may append and ship while the catalog is read:
    // read the files again, so a shipped row missing from them means a
    // removed tail, never a record written in between.
    let segments = read_segments(config)?;
    let mut report = verify_segments(&segments, copy.as_ref().map(|c| c.rows.as_slice()), anchors);
    let pinned = copy.as_ref().and_then(|c| c.pinned.as_deref());
    check_pin(&mut report, instance, pinned);
    let lines = segments
        .into_iter()
        .flat_map(|s| s.lines)
        .map(|l| l.text)
        .collect();
    Ok((report, lines))
}

/// Signed checkpoints verified without `--public-key` are not checked: say so.
fn remind_of_signatures<'a>(report: &mut Report, lines: impl IntoIterator<Item = &'a str>) {
    if let Some(public) = signing_key_named(lines) {
        report.warnings.push(format!(
            "the checkpoints are signed (public key {public}) but --public-key was not given: signatures not checked; pass the auditors' copy of the public key"
        ));
    }
}

fn print_report(report: &Report, from_catalog: bool, json: bool) -> Result<(), CliError> {
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(report)?)?;
        return Ok(());
    }
    let source = if from_catalog {
        "catalog".to_owned()
    } else {
        format!("{} segment(s)", report.segments)
    };
    crate::outln!(
        "journal {}: {} record(s) from {source}, seq {}..{}, {} checkpoint(s)",
        report.journal.as_deref().unwrap_or("(none)"),
        report.records,
        report.first_seq.unwrap_or(0),
        report.last_seq.unwrap_or(0),
        report.checkpoints
    )?;
    if !from_catalog {
        crate::outln!("catalog rows compared: {}", report.table_rows_checked)?;
    }
    crate::outln!("backup manifest heads checked: {}", report.anchors_checked)?;
    if report.signatures_checked > 0 {
        crate::outln!(
            "checkpoint signatures verified: {}",
            report.signatures_checked
        )?;
    }
    for w in &report.warnings {
        crate::outln!("warning: {w}")?;
    }
    for p in &report.problems {
        match p.seq {
            Some(seq) => crate::outln!("FAILED at seq {seq} ({}): {}", p.location, p.what)?,
            None => crate::outln!("FAILED ({}): {}", p.location, p.what)?,
        }
    }
    if report.ok() {
        crate::outln!("OK: the chain, segment links, checkpoints and anchors hold")?;
    }
    Ok(())
}

/// `vigil audit keygen PRIVATE [--public FILE]`: a new checkpoint signing
/// key pair; the private key is created with mode 0600.
pub fn keygen(private: &Path, public: Option<&Path>) -> Result<(), CliError> {
    let public = public.map_or_else(
        || {
            let mut name = private.as_os_str().to_owned();
            name.push(".pub");
            std::path::PathBuf::from(name)
        },
        Path::to_owned,
    );
    crate::journal::sign::keygen(private, &public)?;
    crate::outln!(
        "wrote the private key {} (mode 0600; set `journal.signing_key_file` to it) and the public key {} (give it to the auditors: `vigil audit verify --public-key {}`)",
        private.display(),
        public.display(),
        public.display()
    )?;
    Ok(())
}
