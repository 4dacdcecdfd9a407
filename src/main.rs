//! The process: allocator tuning, the async runtime, then [`vigil::cli`].

use std::process::ExitCode;

/// glibc raises its mmap threshold after the first large free, after which
/// freed 1–8 MiB pipeline buffers stay in per-thread arenas for good: keep
/// large buffers on mmap (returned at once) and the arenas few. Fixing the
/// mmap threshold also pins the trim threshold at 128 KiB, which handed the
/// pipeline's freed chunks back to the kernel and faulted them in again
/// (a page fault per 4 KiB backed up): keep up to 16 MiB of free heap.
fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    // Two rustls crypto providers are linked (reqwest's aws-lc-rs, the FTP
    // client's ring): choose one before any TLS client is built.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vigil: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(vigil::cli::run())
}
