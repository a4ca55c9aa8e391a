//! `yunhe serve`: the control plane.

use std::process::ExitCode;

pub fn serve_main(_args: crate::cli::ServeArgs) -> ExitCode {
    ExitCode::SUCCESS
}
