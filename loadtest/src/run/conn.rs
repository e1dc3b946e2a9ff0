//! One keep-alive connection of the generator: writes pipelined requests, parses the
//! answers, follows each visit's click id with its conversion, and reconnects after errors.

use super::*;

/// Why a connection is closed and opened again.
enum Broken {
    Error(ErrorKind),
    /// The server asked to close (or the run stops).
    Closed,
}

/// Drives one connection until the run stops; reconnects after errors.
pub(super) async fn connection(w: Rc<Worker>, conn_index: usize, conns_total: usize) {
    let plan = &w.shared.plan;
    let mut wbuf: Vec<u8> = Vec::with_capacity(plan.pipeline * 512);
    let mut rbuf: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut inflight: VecDeque<Sent> = VecDeque::with_capacity(plan.pipeline);
    // Open loop: this connection's share of the rate, phase-shifted so the connections
    // do not all fire at once.
    let interval = plan
        .rate
        .map(|r| Duration::from_secs_f64(conns_total as f64 / r));
    let mut next_due = w.shared.start
        + interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(conn_index as f64 / conns_total as f64)
        });
    let mut down_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(50);
    while !w.shared.over() {
        let connect = monoio::time::timeout(plan.timeout, TcpStream::connect_addr(plan.addr)).await;
        let mut stream = match connect {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => {
                w.error(ErrorKind::Connect);
                let since = *down_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= plan.timeout {
                    // The server has been gone for a whole timeout: this connection stops.
                    return;
                }
                monoio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        down_since = None;
        backoff = Duration::from_millis(50);
        let _ = stream.set_nodelay(true);
        rbuf.clear();
        let broken = serve(
            &w,
            &mut stream,
            &mut wbuf,
            &mut rbuf,
            &mut inflight,
            interval,
            &mut next_due,
        )
        .await;
        let now = Instant::now();
        let now_ms = w.shared.wall_ms(now);
        for sent in inflight.drain(..) {
            w.answered(sent, None, now, now_ms);
        }
        match broken {
            Broken::Error(kind) => w.error(kind),
            Broken::Closed => {}
        }
        if w.shared.over() {
            break;
        }
    }
}

/// Sends batches on one open connection until it breaks or the run is over.
async fn serve(
    w: &Rc<Worker>,
    stream: &mut TcpStream,
    wbuf: &mut Vec<u8>,
    rbuf: &mut Vec<u8>,
    inflight: &mut VecDeque<Sent>,
    interval: Option<Duration>,
    next_due: &mut Instant,
) -> Broken {
    let plan = &w.shared.plan;
    loop {
        // How many to send now, and when each was due.
        let mut n = plan.pipeline;
        if let Some(iv) = interval {
            let now = Instant::now();
            if *next_due > now {
                monoio::time::sleep_until(monoio::time::Instant::from_std(*next_due)).await;
            }
            let behind = Instant::now().saturating_duration_since(*next_due);
            n = n.min(1 + (behind.as_nanos() / iv.as_nanos().max(1)) as usize);
        }
        let n = w.shared.take(n);
        if n == 0 {
            return Broken::Closed;
        }
        wbuf.clear();
        let written = Instant::now();
        for _ in 0..n {
            let (step, follow) = w.next_request(wbuf);
            let due = match interval {
                Some(iv) => {
                    let d = *next_due;
                    *next_due += iv;
                    d
                }
                None => written,
            };
            inflight.push_back(Sent { step, due, follow });
        }
        let (res, b) = stream.write_all(std::mem::take(wbuf)).await;
        *wbuf = b;
        if res.is_err() {
            return Broken::Error(ErrorKind::Io);
        }
        // Read until every answer of the batch is in.
        let mut pos = 0;
        while !inflight.is_empty() {
            match funnel::parse_response(&rbuf[pos..]) {
                Ok(Some(r)) => {
                    let at = Instant::now();
                    let now_ms = w.shared.wall_ms(at);
                    let sent = inflight.pop_front().expect("not empty");
                    let location = r.location.map(|(s, l)| &rbuf[pos + s..pos + s + l]);
                    w.answered(sent, Some((r.status, location)), at, now_ms);
                    pos += r.len;
                    if r.close {
                        return Broken::Closed;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(_) => return Broken::Error(ErrorKind::BadResponse),
            }
            if pos > 0 {
                rbuf.drain(..pos);
                pos = 0;
            }
            if rbuf.capacity() - rbuf.len() < 4096 {
                rbuf.reserve(READ_BUF);
            }
            let (len, cap) = (rbuf.len(), rbuf.capacity());
            let read = monoio::time::timeout(
                plan.timeout,
                stream.read(std::mem::take(rbuf).slice_mut(len..cap)),
            )
            .await;
            let Ok((res, slice)) = read else {
                *rbuf = Vec::with_capacity(READ_BUF);
                return Broken::Error(ErrorKind::Timeout);
            };
            *rbuf = slice.into_inner();
            match res {
                Ok(0) | Err(_) => return Broken::Error(ErrorKind::Io),
                Ok(_) => {}
            }
        }
        rbuf.drain(..pos);
    }
}
