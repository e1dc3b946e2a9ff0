//! One connection: read requests, answer them in order (waiting for a conversion to be
//! durable before the answers after it), write with back-pressure and a send timeout, and
//! close cleanly, lingering over a refused request's leftovers.

use super::*;

/// What happens to a connection once its responses are written.
#[derive(Debug)]
enum After {
    KeepOpen,
    Close,
    /// A conversion's answer waits for its event to be durable; the requests after it wait
    /// too, so the answers stay in order.
    Await(Pending),
    /// Close after refusing a request whose rest may still be arriving: half-close and read
    /// what comes for a moment, so the kernel does not reset the connection (and destroy the
    /// error response) over unread bytes.
    CloseLingering,
    /// The output reached its limit with requests still buffered: send it, then answer the
    /// rest before reading more.
    Send,
}

/// How long, and how much, a refused request's leftovers are read before closing.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// Answers every complete request at the front of `rbuf` into `wbuf` (and `100 Continue`
/// to a partial one that asks for it). Returns the bytes consumed and what to do next.
fn answer_buffered(
    w: &Worker,
    rbuf: &[u8],
    wbuf: &mut Vec<u8>,
    peer: SocketAddr,
    continue_sent: &mut bool,
) -> (usize, After) {
    let limits = &w.shared.settings.limits;
    let mut routing = w.routing.borrow_mut();
    let routing: &Routing = routing.load();
    let mut local = w.local.borrow_mut();
    let stats = w.stats();
    let ctx = Ctx {
        routing,
        metrics: &w.shared.metrics,
        visitors: &w.shared.visitors,
        clicks: &w.shared.clicks,
        draining: w.draining.get(),
        metrics_allow: &w.shared.settings.metrics_allow,
    };
    let tx = w.tx.borrow();
    let mut emit = ChannelEmit {
        tx: tx.as_ref(),
        stats,
        drops: &w.drops,
        worker: w.id,
    };
    let now = SystemTime::now();
    let mut consumed = 0;
    while consumed < rbuf.len() {
        if wbuf.len() >= limits.max_unsent_output {
            // Backpressure: what is answered goes out before anything more is answered.
            return (consumed, After::Send);
        }
        let room = limits.max_unsent_output + RESPONSE_ROOM;
        if wbuf.len() > limits.max_unsent_output / 2 && wbuf.capacity() < room {
            // Past half the limit, grow to the limit (and one answer) rather than double.
            wbuf.reserve_exact(room - wbuf.len());
        }
        match http::parse(&rbuf[consumed..], limits) {
            Parse::Complete(req) => {
                let answer =
                    handler::handle(&ctx, &mut local, &req, peer.ip(), now, &mut emit, wbuf);
                consumed += req.raw.len();
                *continue_sent = false;
                match answer {
                    Answer::Done(route, status) => stats.request(route, status),
                    Answer::Pending(p) => return (consumed, After::Await(p)),
                }
                if !req.keep_alive || ctx.draining {
                    return (consumed, After::Close);
                }
            }
            Parse::Partial { expect_continue } => {
                if expect_continue && !*continue_sent {
                    wbuf.extend_from_slice(response::CONTINUE);
                    *continue_sent = true;
                }
                break;
            }
            Parse::Error(e) => {
                local.date.update(now);
                let status = Reject::new(Status::from_code(e.status()), e.message()).write(
                    wbuf,
                    &local.date,
                    Framing::close(),
                );
                stats.request(Route::Other, status);
                return (rbuf.len(), After::CloseLingering);
            }
        }
    }
    (consumed, After::KeepOpen)
}

async fn linger(stream: &mut TcpStream, mut buf: Vec<u8>) {
    let _ = stream.shutdown().await;
    let deadline = Instant::now() + LINGER;
    let mut total = 0;
    while total < LINGER_BYTES {
        buf.clear();
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, stream.read(buf)).await {
            Ok((Ok(n), b)) if n > 0 => {
                total += n;
                buf = b;
            }
            _ => break,
        }
    }
}

/// Why an answer could not be sent.
#[derive(Debug, PartialEq, Eq)]
enum Unsent {
    /// The peer did not read for the send timeout.
    TimedOut,
    /// The peer went away.
    Closed,
}

/// Writes all of `buf`; each write may wait up to `limit` for the peer to read (nginx's
/// `send_timeout`). An error means close the connection.
async fn send(
    stream: &mut TcpStream,
    mut buf: Vec<u8>,
    limit: Duration,
) -> Result<Vec<u8>, Unsent> {
    let len = buf.len();
    let mut sent = 0;
    while sent < len {
        let write = monoio::time::timeout(limit, stream.write(buf.slice(sent..len))).await;
        // On a timeout the write is cancelled and the buffer goes with it.
        let (res, slice) = write.map_err(|_| Unsent::TimedOut)?;
        buf = slice.into_inner();
        match res {
            Ok(n) if n > 0 => sent += n,
            _ => return Err(Unsent::Closed),
        }
    }
    Ok(buf)
}

pub(super) async fn connection(w: Rc<Worker>, mut stream: TcpStream, peer: SocketAddr) {
    w.stats().connection_opened();
    let limits = w.shared.settings.limits;
    let mut rbuf: Vec<u8> = Vec::with_capacity(BUF_SIZE);
    // Borrowed from the worker's pool while the connection has requests to answer.
    let mut wbuf: Vec<u8> = Vec::new();
    // When the request now arriving began; the first one's clock starts at accept.
    let mut started: Option<Instant> = Some(Instant::now());
    let mut continue_sent = false;
    let mut busy = false;
    loop {
        if !rbuf.is_empty() && wbuf.capacity() == 0 {
            wbuf = w.take_wbuf();
        }
        let (consumed, after) = answer_buffered(&w, &rbuf, &mut wbuf, peer, &mut continue_sent);
        if consumed > 0 {
            rbuf.drain(..consumed);
            started = None;
            if rbuf.capacity() > KEPT_RBUF_MAX && rbuf.len() <= MAX_READ {
                // A long request grew it: what follows goes back to the normal size.
                let mut small = Vec::with_capacity(BUF_SIZE.max(rbuf.len() + MIN_READ));
                small.extend_from_slice(&rbuf);
                rbuf = small;
            }
        }
        if !wbuf.is_empty() {
            match send(&mut stream, wbuf, limits.send_timeout).await {
                Ok(buf) => {
                    wbuf = buf;
                    wbuf.clear();
                }
                Err(why) => {
                    if why == Unsent::TimedOut {
                        w.stats().send_timed_out();
                    }
                    break;
                }
            }
        }
        let after = match after {
            After::Await(mut p) => {
                // The worker keeps serving other connections meanwhile.
                let limit = w.shared.settings.durable_timeout;
                let durable = monoio::time::timeout(limit, &mut p.ack)
                    .await
                    .unwrap_or(false);
                let st = p.answer(durable, &w.local.borrow().date, &mut wbuf);
                w.stats().request(p.route, st);
                if p.keep_alive() {
                    // Answer what else is buffered, then write it all in order.
                    continue;
                }
                let _ = send(&mut stream, wbuf, limits.send_timeout).await;
                break;
            }
            other => other,
        };
        match after {
            After::KeepOpen | After::Await(_) => {}
            // More requests are buffered: answer them before reading.
            After::Send => continue,
            After::Close => break,
            After::CloseLingering => {
                linger(&mut stream, rbuf).await;
                break;
            }
        }
        if rbuf.is_empty() {
            w.give_wbuf(std::mem::take(&mut wbuf));
            set_busy(&w, &mut busy, false);
            if w.draining.get() {
                break;
            }
        } else if started.is_none() {
            started = Some(Instant::now());
        }
        let wait = match started {
            Some(t) => limits.head_timeout.saturating_sub(t.elapsed()),
            None => limits.idle_timeout,
        };
        if rbuf.capacity() - rbuf.len() < MIN_READ {
            rbuf.reserve(rbuf.capacity().max(BUF_SIZE));
        }
        let (len, cap) = (rbuf.len(), rbuf.capacity().min(rbuf.len() + MAX_READ));
        let read = monoio::time::timeout(wait, stream.read(rbuf.slice_mut(len..cap))).await;
        let Ok((res, slice)) = read else {
            // The read was cancelled with the timeout; the buffer went with it.
            if started.is_some() {
                {
                    let mut local = w.local.borrow_mut();
                    local.date.update(SystemTime::now());
                    let st = Reject::new(Status::RequestTimeout, "request not received in time")
                        .write(&mut wbuf, &local.date, Framing::close());
                    w.stats().request(Route::Other, st);
                }
                let _ = send(&mut stream, wbuf, limits.send_timeout).await;
            }
            break;
        };
        rbuf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                set_busy(&w, &mut busy, true);
                if started.is_none() {
                    started = Some(Instant::now());
                }
            }
        }
    }
    set_busy(&w, &mut busy, false);
    w.stats().connection_closed();
}
