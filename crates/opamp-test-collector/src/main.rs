//! `opamp-test-collector`: a scripted stand-in for an OpenTelemetry Collector.

use std::process::ExitCode;

use opamp_test_collector::{Command, build_variant, read_variant, resolve, run::run};

fn main() -> ExitCode {
    let embedded = match std::env::current_exe().and_then(|exe| read_variant(&exe)) {
        Ok(variant) => variant,
        Err(e) => {
            eprintln!("opamp-test-collector: cannot read embedded variant: {e}");
            None
        }
    };
    let command = resolve(
        std::env::args().skip(1),
        |k| std::env::var(k).ok(),
        embedded,
    );
    match command {
        Ok(Command::PrintVersion(version)) => {
            println!("opamp-test-collector version {version}");
            ExitCode::SUCCESS
        }
        Ok(Command::PrintComponents(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Command::BuildVariant { out, variant }) => {
            match std::env::current_exe().and_then(|exe| build_variant(&exe, &out, &variant)) {
                Ok(()) => {
                    println!("built {} (version {})", out.display(), variant.version);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "opamp-test-collector: cannot build variant {}: {e}",
                        out.display()
                    );
                    ExitCode::from(1)
                }
            }
        }
        Ok(Command::Run(settings)) => exit_code(run(settings)),
        Err(e) => {
            eprintln!("opamp-test-collector: {e}");
            ExitCode::from(2)
        }
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
