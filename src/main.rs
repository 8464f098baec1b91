//! The `mprelay` binary: parses the command line and hands over to the library.

fn main() -> std::process::ExitCode {
    mprelay::cli::main()
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
