//! `vigil completions SHELL` and `vigil man`: generated from the clap
//! definitions in [`super::args`], so they never drift from the commands.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use super::args::Cli;
use super::out::OutputError;

/// Writing the man pages into a directory failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the man pages into {dir} (it must exist and be writable)")]
pub struct ManError {
    pub dir: String,
    #[source]
    pub source: std::io::Error,
}

/// Prints the completion script for `shell`.
pub fn completions(shell: Shell) -> Result<(), OutputError> {
    // Rendered into memory first: clap_complete panics on a failed write,
    // and a closed stdout must end the command quietly.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "vigil", &mut script);
    print_bytes(&script)
}

/// Prints vigil(1) on stdout.
pub fn man_page() -> Result<(), OutputError> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    print_bytes(&page)
}

/// Writes vigil.1 and one page per subcommand into `dir`.
pub fn man_pages_into(dir: &Path) -> Result<(), ManError> {
    clap_mangen::generate_to(Cli::command(), dir).map_err(|source| ManError {
        dir: dir.display().to_string(),
        source,
    })
}

/// Both generators write UTF-8 text.
fn print_bytes(bytes: &[u8]) -> Result<(), OutputError> {
    crate::out!("{}", String::from_utf8_lossy(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_names_every_subcommand() {
        let mut page = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut page)
            .unwrap();
        let page = String::from_utf8(page).unwrap().replace("\\-", "-");
        for sub in Cli::command().get_subcommands() {
            assert!(
                page.contains(&format!("vigil-{}", sub.get_name())),
                "{} missing from the man page",
                sub.get_name()
            );
        }
    }

    #[test]
    fn man_pages_into_a_directory_one_per_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        man_pages_into(dir.path()).unwrap();
        for page in ["vigil.1", "vigil-backup.1", "vigil-audit-verify.1"] {
            assert!(dir.path().join(page).is_file(), "{page} not written");
        }
        let missing = dir.path().join("absent");
        let e = man_pages_into(&missing).unwrap_err();
        assert!(e.to_string().contains("absent"), "{e}");
    }
}
