//! The `sidecache` binary: everything lives in the library; see `sidecache --help`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    sidecache::cli::main()
}
