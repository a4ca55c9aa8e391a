//! `cargo run --release --example bench_blk` (from fuzz/): the virtio-blk request path benchmark.

fn main() {
    let r = yunhe_virtio_fuzz::virtio::bench::bench_blk_path();
    if r.errors != 0 {
        std::process::exit(1);
    }
}
