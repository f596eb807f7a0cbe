//! A blocking WebSocket echo server over `tollgate::websocket`, one thread per connection: the
//! shortest complete driver of the handshake and the decoder, and the testee for Autobahn.
//!
//! Not the gateway's connection task (that one runs on compio, per core); this shows the same
//! calls in the same order with std sockets.
//!
//! Run: `cargo run --release --example ws_echo -- 127.0.0.1:9001`, then
//! `loadtest/autobahn/run.sh ws://127.0.0.1:9001`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use tollgate::http1::{HeadLimits, header_slots, parse_request};
use tollgate::limits::READ_BUF_BYTES;
use tollgate::websocket::{
    CloseState, Decoder, DecoderLimits, Event, MessageKind, Opcode, Step, encode_close,
    encode_close_reply, encode_frame, handshake,
};

/// Autobahn's section 9 sends messages and frames of up to 16 MiB; the gateway's defaults
/// (32 KiB frames, 128 KiB messages) would close those with 1009.
const ECHO_LIMITS: DecoderLimits = DecoderLimits {
    frame_bytes_max: 32 << 20,
    message_bytes_max: 32 << 20,
};

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&addr)?;
    eprintln!("ws_echo listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || {
            if let Err(e) = serve(stream) {
                eprintln!("connection: {e}");
            }
        });
    }
    Ok(())
}

fn serve(mut sock: TcpStream) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = vec![0u8; READ_BUF_BYTES];
    let mut filled = 0;
    let head_len = loop {
        let n = sock.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let mut slots = header_slots::<64>();
        let head = match parse_request(&buf[..filled], &mut slots, &HeadLimits::default()) {
            Ok(Some(head)) => head,
            Ok(None) if filled < buf.len() => continue,
            _ => return refuse(&mut sock, 400, None),
        };
        match handshake::validate(head.method, head.headers) {
            Ok(up) => {
                let mut out = Vec::new();
                up.write_response(&mut out, None, &[]);
                sock.write_all(&out)?;
                break head.head_len;
            }
            Err(e) => return refuse(&mut sock, e.status(), e.response_header()),
        }
    };
    buf.copy_within(head_len..filled, 0);
    filled -= head_len;
    echo(sock, buf, filled)
}

fn refuse(sock: &mut TcpStream, status: u16, header: Option<(&str, &str)>) -> io::Result<()> {
    let extra = header
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .unwrap_or_default();
    write!(
        sock,
        "HTTP/1.1 {status} Refused\r\n{extra}content-length: 0\r\nconnection: close\r\n\r\n"
    )
}

/// The WebSocket loop: decode what is buffered, answer, write, read more.
fn echo(mut sock: TcpStream, mut buf: Vec<u8>, mut filled: usize) -> io::Result<()> {
    let mut dec = Decoder::new(ECHO_LIMITS);
    let mut out = Vec::new();
    loop {
        let mut start = 0;
        loop {
            let input = &mut buf[start..filled];
            match dec.decode(input) {
                Ok(Step::Event { event, consumed }) => {
                    let input = &buf[start..filled];
                    match event {
                        Event::Message { kind, payload } => {
                            let opcode = match kind {
                                MessageKind::Text => Opcode::Text,
                                MessageKind::Binary => Opcode::Binary,
                            };
                            encode_frame(&mut out, opcode, dec.payload(input, &payload));
                        }
                        Event::Ping(r) => encode_frame(&mut out, Opcode::Pong, &input[r]),
                        Event::Pong(_) => {}
                        Event::Close { code, reply, .. } => {
                            if reply {
                                encode_close_reply(&mut out, code);
                                dec.close_sent();
                            }
                            // The server closes TCP first (RFC 6455 §7.1.1).
                            return sock.write_all(&out);
                        }
                    }
                    start += consumed;
                }
                Ok(Step::NeedMore {
                    consumed,
                    frame_bytes,
                }) => {
                    start += consumed;
                    if buf.len() < frame_bytes {
                        buf.resize(frame_bytes, 0);
                    }
                    break;
                }
                Err(code) => {
                    if dec.state() == CloseState::Open {
                        encode_close(&mut out, code, "");
                        dec.close_sent();
                    }
                    sock.write_all(&out)?;
                    return linger(sock);
                }
            }
        }
        if !out.is_empty() {
            sock.write_all(&out)?;
            out.clear();
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        let n = sock.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
    }
}

/// After failing a connection: stop writing, read until the peer closes (or briefly), so unread
/// input does not turn our close into a reset that loses the close frame.
fn linger(mut sock: TcpStream) -> io::Result<()> {
    sock.shutdown(Shutdown::Write)?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut sink = [0u8; 4096];
    while matches!(sock.read(&mut sink), Ok(n) if n > 0) {}
    Ok(())
}
