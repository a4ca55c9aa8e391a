//! `yunhe bench`: measurements printed as ratios against named baselines.

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

pub fn bench_main(_args: BenchArgs) -> ExitCode {
    ExitCode::SUCCESS
}
