//! Fuzz target: arbitrary bytes as a request to the edge (`http::parse`, then the handler
//! with the demo config); every whole request must get one well-formed HTTP/1.1 response.

use std::panic::AssertUnwindSafe;

use clicktracker_fuzz::Edge;

fn main() {
    // Unwind safety does not matter: a panic aborts the process (afl's panic hook).
    let mut edge = AssertUnwindSafe(Edge::demo(""));
    afl::fuzz!(|data: &[u8]| {
        edge.serve(data);
    });
}
