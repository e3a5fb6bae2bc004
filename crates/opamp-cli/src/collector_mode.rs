//! A copy of `opamp` with a test-collector variant trailer runs as that test collector.
//!
//! `opamp demo` needs collector binaries of several versions and behaviours, without a
//! compiler and without relying on a second binary having been built next to `opamp`
//! (`cargo run --bin opamp` builds only `opamp`). `opamp_test_collector::build_variant`
//! copies an executable and appends a trailer naming a version and behaviour; when such a copy
//! of `opamp` starts, this module notices the trailer and runs the test collector's logic
//! instead of the command line, so supervisors can start it with collector flags
//! (`--health-port`, `--version`, ...). `opamp __test-collector ARGS` does the same without a
//! trailer (flags such as `--set-version` choose the variant), which lets the demo's packages
//! be small launcher scripts instead of copies of a large binary.

use std::process::ExitCode;

use opamp_test_collector::{Command, Variant, read_variant, resolve, run::run};

/// The variant embedded in the running executable, if it is a collector copy.
fn embedded_variant() -> Option<Variant> {
    let exe = std::env::current_exe().ok()?;
    // An unreadable or malformed trailer means this is the plain `opamp` command.
    read_variant(&exe).ok().flatten()
}

/// The hidden first argument that makes `opamp` run as the test collector
/// (`opamp __test-collector --set-version 1.1.0 --health-port 13133`); the demo's collector
/// packages are small launcher scripts that exec it.
pub(crate) const COLLECTOR_ARG: &str = "__test-collector";

/// Runs as the test collector when the executable carries a variant trailer or the first
/// argument is [`COLLECTOR_ARG`]; `None` otherwise.
pub(crate) fn run_if_collector() -> Option<ExitCode> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let variant = if args.first().map(String::as_str) == Some(COLLECTOR_ARG) {
        args.remove(0);
        None
    } else {
        Some(embedded_variant()?)
    };
    let command = resolve(args, |key| std::env::var(key).ok(), variant);
    Some(match command {
        Ok(Command::PrintVersion(version)) => {
            // The version goes to stdout, like a real collector's `--version`.
            match crate::output::line(format_args!("opamp-test-collector version {version}")) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Ok(Command::PrintComponents(text)) => match crate::output::line(text.trim_end()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        },
        Ok(Command::BuildVariant { out, variant }) => {
            let built = std::env::current_exe()
                .and_then(|exe| opamp_test_collector::build_variant(&exe, &out, &variant));
            match built {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    crate::output::note(format_args!("opamp-test-collector: {error}"));
                    ExitCode::FAILURE
                }
            }
        }
        Ok(Command::Run(settings)) => ExitCode::from(u8::try_from(run(settings)).unwrap_or(1)),
        Err(error) => {
            crate::output::note(format_args!("opamp-test-collector: {error}"));
            ExitCode::from(2)
        }
    })
}
