//! The floor: a bare monoio HTTP/1.1 server that answers every request with the same 302
//! and records nothing. The comparison script runs it beside the edge so the edge's cost
//! per request can be read as a ratio to what the kernel and runtime alone cost.
//!
//! `bare [ADDR] [NAP_US]` (default 127.0.0.1:8090); one thread, io_uring where available.
//! With NAP_US, a second thread wakes every NAP_US microseconds and does nothing, as the
//! edge's sink thread does while it polls the event channels: on a VM an idle core is
//! slow to wake, so a core kept awake answers faster, and this variant shows how much.

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] = b"HTTP/1.1 302 Found\r\nServer: bare\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\nLocation: https://offers.example.com/drip?aff_sub=0167a15c98772c0004000001&src=blog&medium=review\r\nCache-Control: no-store\r\nContent-Length: 0\r\n\r\n";

async fn serve(mut stream: TcpStream) {
    let mut rbuf: Vec<u8> = Vec::with_capacity(4096);
    let mut wbuf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let (len, cap) = (rbuf.len(), rbuf.capacity());
        let (res, slice) = stream.read(rbuf.slice_mut(len..cap)).await;
        rbuf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // Answer every complete request head in the buffer; keep a partial one.
        let mut start = 0;
        while let Some(end) = rbuf[start..].windows(4).position(|w| w == b"\r\n\r\n") {
            wbuf.extend_from_slice(RESPONSE);
            start += end + 4;
        }
        rbuf.drain(..start);
        if rbuf.len() == rbuf.capacity() {
            rbuf.reserve(4096);
        }
        if !wbuf.is_empty() {
            let (res, buf) = stream.write_all(wbuf).await;
            wbuf = buf;
            wbuf.clear();
            if res.is_err() {
                return;
            }
        }
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    if let Some(nap) = std::env::args().nth(2) {
        let nap = std::time::Duration::from_micros(nap.parse().expect("NAP_US is a number"));
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(nap);
            }
        });
    }
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(4096)
        .enable_timer()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr)?;
        eprintln!("bare: listening on http://{addr}");
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            monoio::spawn(serve(stream));
        }
    })
}
