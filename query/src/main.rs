//! `query`: DataFusion reports over the store. Not built yet (issue 5); it says so and fails
//! rather than print numbers it does not have.

fn main() -> std::process::ExitCode {
    eprintln!(
        "query: not built yet. The edge does not store events yet (the sink is issue 4); \
         reports, the conversion feed and SQL arrive with issue 5."
    );
    std::process::ExitCode::from(2)
}
