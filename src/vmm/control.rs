//! `yunhe vmm --spec FILE`: one VM from a JSON spec, driven over a unix control socket.

use std::process::ExitCode;

use super::VmmArgs;

pub fn vmm_main(_args: VmmArgs) -> ExitCode {
    eprintln!("yunhe vmm: not built yet");
    ExitCode::FAILURE
}
