//! The `sidecache` binary: everything lives in the library; see `sidecache --help`.
#![forbid(unsafe_code)]

/// mimalloc, not the system's malloc: see `docs/performance.md` ("The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sidecache::cli::main()
}
