//! `loadtest`: the funnel traffic generator and store verifier. Not built yet (issue 6); it
//! says so and fails. Until then, drive the edge with `wrk` (see `benches/compare.sh`).

fn main() -> std::process::ExitCode {
    eprintln!(
        "loadtest: not built yet (issue 6). Use benches/compare.sh (wrk) to drive the edge meanwhile."
    );
    std::process::ExitCode::from(2)
}
