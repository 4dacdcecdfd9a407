//! Create-only writes on a local filesystem (leases, manifests).

use super::{RepoError, Repository, fs_tmp_dir};

impl Repository {
    /// fs: temp file, fsync, `link(2)` into place (fails if the name
    /// exists), fsync of the directory; `false` if the name exists.
    /// opendal's fs `if_not_exists` with `atomic_write_dir` checks, then
    /// renames: two writers could both "win".
    pub(super) async fn fs_create_new(
        &self,
        root: &std::path::Path,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<bool, RepoError> {
        let repo = self;
        let target = root.join(path);
        let tmp = fs_tmp_dir(&root.display().to_string())
            .join(format!("create-{}", uuid::Uuid::new_v4().simple()));
        let io_err = |action: &'static str, at: &std::path::Path, e: std::io::Error| {
            if super::is_out_of_space(&e) {
                return RepoError::Full {
                    repo: repo.name.clone(),
                    action,
                    path: at.display().to_string(),
                    free: crate::fsinfo::available(root),
                };
            }
            RepoError::Storage {
                repo: repo.name.clone(),
                action,
                path: at.display().to_string(),
                detail: e.to_string(),
                retryable: false,
            }
        };
        let linked = tokio::task::spawn_blocking({
            let (target, tmp) = (target.clone(), tmp.clone());
            move || fs_link_new(&target, &tmp, &bytes)
        })
        .await
        .map_err(|e| io_err("cannot create", &target, std::io::Error::other(e)))?;
        match linked {
            Ok(created) => Ok(created),
            Err((at, e)) => Err(io_err("cannot create", &at, e)),
        }
    }
}

/// The blocking part of [`Repository::fs_create_new`]; errors say which file failed.
fn fs_link_new(
    target: &std::path::Path,
    tmp: &std::path::Path,
    bytes: &[u8],
) -> Result<bool, (std::path::PathBuf, std::io::Error)> {
    use std::io::Write;
    let at = |p: &std::path::Path| {
        let p = p.to_owned();
        move |e| (p, e)
    };
    let dir = target.parent().unwrap_or(std::path::Path::new("/"));
    std::fs::create_dir_all(dir).map_err(at(dir))?;
    let mut file = std::fs::File::create_new(tmp).map_err(at(tmp))?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    // The worst moment to die: everything written, nothing under the name.
    #[cfg(feature = "failpoints")]
    let written = written
        .and_then(|()| crate::failpoint::hit("create.before_link").map_err(std::io::Error::other));
    let linked = written.and_then(|()| std::fs::hard_link(tmp, target));
    let _ = std::fs::remove_file(tmp);
    match linked {
        Ok(()) => {
            // The new name must survive a crash like a manifest does.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(at(dir))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err((target.to_owned(), e)),
    }
}

#[cfg(test)]
mod tests {
    use crate::core::manifest::tests::sample;
    use crate::repo::{RepoError, Repository};

    #[tokio::test]
    async fn racing_commits_of_one_manifest_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let config: crate::config::RepositoryConfig = toml::from_str(&format!(
            "scheme = \"fs\"\noptions = {{ root = \"{}\" }}\n",
            dir.path().display()
        ))
        .unwrap();
        let repo = Repository::open("local", &config).unwrap();
        let manifest = sample();
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (repo, manifest) = (repo.clone(), manifest.clone());
                tokio::spawn(async move { repo.commit_manifest(&manifest).await })
            })
            .collect();
        let mut won = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(()) => won += 1,
                Err(RepoError::AlreadyCommitted { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(won, 1);
    }
}
