//! The datagrams between a pool's workers and the master's holder, on the pool's
//! `SOCK_SEQPACKET` socket pair (one end in the master, the other shared by every worker of the
//! pool). Each datagram carries one connection's descriptor (SCM_RIGHTS, `sys::fdpass`) and
//! these bytes:
//!
//! - worker → master, [`ToMaster::Hold`]: hold this request (its id, keep-conn, bytes already
//!   read past it, and what to wait for: a GRIP hold with the app's timeout response, or a
//!   `longpoll` sub/pub);
//! - worker → master, [`ToMaster::Pass`]: an idle kept connection a retiring worker gives up
//!   (so it is not closed under nginx's feet); the master passes it on;
//! - master → worker, [`Back`]: a kept connection after its held answer (or passed on), for a
//!   worker's front to park idle.
//!
//! A small hand-made binary layout (tag, then fields with u16/u32 lengths), because bodies are
//! bytes and may be 1 MiB: JSON would quadruple them. Every length is checked against its cap
//! before bytes are taken; a datagram is whole or refused (SEQPACKET never splits one).

use thiserror::Error;

use super::message::{MAX_BODY, MAX_CHANNEL_LEN};

/// Most channels one GRIP hold may name.
pub const MAX_CHANNELS: usize = 64;
/// Largest timeout response a GRIP hold may carry (headers + body, as CGI bytes).
pub const MAX_RESPONSE: usize = 64 * 1024;
/// Most bytes read past a request (the start of the next one) a connection may carry along.
pub const MAX_PENDING: usize = 64 * 1024;
/// Longest `Content-Type` a publish may carry.
pub const MAX_CONTENT_TYPE: usize = 256;
/// The largest datagram [`encode_to_master`] makes: the receive buffer's size.
pub const MAX_DATAGRAM: usize = MAX_BODY + MAX_PENDING + MAX_CONTENT_TYPE + MAX_CHANNEL_LEN + 64;

/// One channel of a hold, with the id to resume after (GRIP's `prev-id`, longpoll's `last_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireChannel {
    pub name: String,
    pub after: Option<u64>,
}

/// What a held request waits for, and what answers it otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// A relayed app said `Grip-Hold: response`: on timeout, `response` (CGI bytes, `Grip-*`
    /// removed) is the answer.
    Grip {
        channels: Vec<WireChannel>,
        timeout_ms: u32,
        response: Vec<u8>,
    },
    /// `longpoll` `sub`: the next message on `channel` (after `after`, if given).
    Sub { channel: WireChannel },
    /// `longpoll` `pub`: publish `body`, answer with the id and the subscriber count.
    Pub {
        channel: String,
        content_type: Option<String>,
        body: Vec<u8>,
    },
}

/// A request for the holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldMsg {
    pub request_id: u16,
    /// FCGI_KEEP_CONN: after the answer the connection goes back to a worker, not closed.
    pub keep_conn: bool,
    /// Bytes read past the request (a pipelining client's next request).
    pub pending: Vec<u8>,
    pub ask: Ask,
}

/// Worker → master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToMaster {
    Hold(HoldMsg),
    /// An idle kept connection for another worker of the pool.
    Pass {
        pending: Vec<u8>,
    },
}

/// Master → worker: a kept connection to park idle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Back {
    pub pending: Vec<u8>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("datagram ends inside {0}")]
    Truncated(&'static str),
    #[error("{0} over its cap")]
    TooLong(&'static str),
    #[error("unknown tag {0} in {1}")]
    UnknownTag(u8, &'static str),
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

const TAG_HOLD: u8 = 1;
const TAG_PASS: u8 = 2;
const TAG_BACK: u8 = 3;
const ASK_GRIP: u8 = 1;
const ASK_SUB: u8 = 2;
const ASK_PUB: u8 = 3;

/// The bytes of a worker → master datagram, into `out` (cleared first).
pub fn encode_to_master(msg: &ToMaster, out: &mut Vec<u8>) {
    out.clear();
    match msg {
        ToMaster::Hold(h) => {
            out.push(TAG_HOLD);
            out.extend_from_slice(&h.request_id.to_be_bytes());
            out.push(u8::from(h.keep_conn));
            put32(out, &h.pending);
            match &h.ask {
                Ask::Grip {
                    channels,
                    timeout_ms,
                    response,
                } => {
                    out.push(ASK_GRIP);
                    out.extend_from_slice(&timeout_ms.to_be_bytes());
                    out.extend_from_slice(&(channels.len() as u16).to_be_bytes());
                    for c in channels {
                        put_channel(out, c);
                    }
                    put32(out, response);
                }
                Ask::Sub { channel } => {
                    out.push(ASK_SUB);
                    put_channel(out, channel);
                }
                Ask::Pub {
                    channel,
                    content_type,
                    body,
                } => {
                    out.push(ASK_PUB);
                    put16(out, channel.as_bytes());
                    put16(out, content_type.as_deref().unwrap_or("").as_bytes());
                    put32(out, body);
                }
            }
        }
        ToMaster::Pass { pending } => {
            out.push(TAG_PASS);
            put32(out, pending);
        }
    }
}

/// A worker → master datagram read back.
pub fn decode_to_master(bytes: &[u8]) -> Result<ToMaster, WireError> {
    let mut r = Reader(bytes);
    let msg = match r.u8("tag")? {
        TAG_HOLD => {
            let request_id = r.u16("request id")?;
            let keep_conn = r.u8("flags")? & 1 == 1;
            let pending = r.bytes32("pending bytes", MAX_PENDING)?.to_vec();
            let ask = match r.u8("ask")? {
                ASK_GRIP => {
                    let timeout_ms = r.u32("timeout")?;
                    let n = usize::from(r.u16("channel count")?);
                    if n > MAX_CHANNELS {
                        return Err(WireError::TooLong("channel count"));
                    }
                    let mut channels = Vec::with_capacity(n);
                    for _ in 0..n {
                        channels.push(r.channel()?);
                    }
                    let response = r.bytes32("response", MAX_RESPONSE)?.to_vec();
                    Ask::Grip {
                        channels,
                        timeout_ms,
                        response,
                    }
                }
                ASK_SUB => Ask::Sub {
                    channel: r.channel()?,
                },
                ASK_PUB => {
                    let channel = r.str16("channel", MAX_CHANNEL_LEN)?;
                    let content_type = r.str16("content type", MAX_CONTENT_TYPE)?;
                    let body = r.bytes32("body", MAX_BODY)?.to_vec();
                    Ask::Pub {
                        channel,
                        content_type: (!content_type.is_empty()).then_some(content_type),
                        body,
                    }
                }
                tag => return Err(WireError::UnknownTag(tag, "ask")),
            };
            ToMaster::Hold(HoldMsg {
                request_id,
                keep_conn,
                pending,
                ask,
            })
        }
        TAG_PASS => ToMaster::Pass {
            pending: r.bytes32("pending bytes", MAX_PENDING)?.to_vec(),
        },
        tag => return Err(WireError::UnknownTag(tag, "message")),
    };
    r.end()?;
    Ok(msg)
}

/// The bytes of a master → worker datagram, into `out` (cleared first).
pub fn encode_back(back: &Back, out: &mut Vec<u8>) {
    out.clear();
    out.push(TAG_BACK);
    put32(out, &back.pending);
}

/// A master → worker datagram read back.
pub fn decode_back(bytes: &[u8]) -> Result<Back, WireError> {
    let mut r = Reader(bytes);
    match r.u8("tag")? {
        TAG_BACK => {}
        tag => return Err(WireError::UnknownTag(tag, "message")),
    }
    let pending = r.bytes32("pending bytes", MAX_PENDING)?.to_vec();
    r.end()?;
    Ok(Back { pending })
}

fn put16(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put32(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_channel(out: &mut Vec<u8>, c: &WireChannel) {
    put16(out, c.name.as_bytes());
    match c.after {
        Some(id) => {
            out.push(1);
            out.extend_from_slice(&id.to_be_bytes());
        }
        None => out.push(0),
    }
}

/// A cursor over a datagram: every take checks the length first.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn bytes32(&mut self, what: &'static str, cap: usize) -> Result<&'a [u8], WireError> {
        let n = self.u32(what)? as usize;
        if n > cap {
            return Err(WireError::TooLong(what));
        }
        self.take(n, what)
    }
    fn str16(&mut self, what: &'static str, cap: usize) -> Result<String, WireError> {
        let n = usize::from(self.u16(what)?);
        if n > cap {
            return Err(WireError::TooLong(what));
        }
        let b = self.take(n, what)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| WireError::NotUtf8(what))
    }
    fn channel(&mut self) -> Result<WireChannel, WireError> {
        let name = self.str16("channel", MAX_CHANNEL_LEN)?;
        let after = match self.u8("resume flag")? {
            0 => None,
            _ => Some(self.u64("resume id")?),
        };
        Ok(WireChannel { name, after })
    }
    fn end(&self) -> Result<(), WireError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<ToMaster> {
        let ch = |name: &str, after| WireChannel {
            name: name.into(),
            after,
        };
        vec![
            ToMaster::Hold(HoldMsg {
                request_id: 1,
                keep_conn: true,
                pending: vec![],
                ask: Ask::Grip {
                    channels: vec![ch("a", None), ch("b", Some(7))],
                    timeout_ms: 55_000,
                    response: b"Status: 200 OK\r\n\r\nwait".to_vec(),
                },
            }),
            ToMaster::Hold(HoldMsg {
                request_id: 65535,
                keep_conn: false,
                pending: vec![1, 2, 3],
                ask: Ask::Sub {
                    channel: ch("room", Some(u64::MAX)),
                },
            }),
            ToMaster::Hold(HoldMsg {
                request_id: 9,
                keep_conn: false,
                pending: vec![],
                ask: Ask::Pub {
                    channel: "room".into(),
                    content_type: Some("text/plain".into()),
                    body: vec![0, 255, 10],
                },
            }),
            ToMaster::Hold(HoldMsg {
                request_id: 9,
                keep_conn: false,
                pending: vec![],
                ask: Ask::Pub {
                    channel: "room".into(),
                    content_type: None,
                    body: vec![],
                },
            }),
            ToMaster::Pass {
                pending: vec![9; 10],
            },
        ]
    }

    #[test]
    fn round_trips() {
        let mut out = Vec::new();
        for msg in samples() {
            encode_to_master(&msg, &mut out);
            assert!(out.len() <= MAX_DATAGRAM);
            assert_eq!(decode_to_master(&out).as_ref(), Ok(&msg));
        }
        let back = Back {
            pending: b"next".to_vec(),
        };
        encode_back(&back, &mut out);
        assert_eq!(decode_back(&out), Ok(back));
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let mut out = Vec::new();
        for msg in samples() {
            encode_to_master(&msg, &mut out);
            for cut in 0..out.len() {
                assert!(
                    decode_to_master(&out[..cut]).is_err(),
                    "{msg:?} cut at {cut}"
                );
            }
            out.push(0);
            assert_eq!(decode_to_master(&out), Err(WireError::Trailing(1)));
        }
    }

    #[test]
    fn caps_are_checked_before_bytes_are_taken() {
        // A pending length of 4 GiB in a 12-byte datagram: refused by its cap, not by a read.
        let bytes = [TAG_PASS, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            decode_to_master(&bytes),
            Err(WireError::TooLong("pending bytes"))
        );
        assert_eq!(
            decode_to_master(&[7]),
            Err(WireError::UnknownTag(7, "message"))
        );
        assert_eq!(
            decode_back(&[TAG_HOLD]),
            Err(WireError::UnknownTag(1, "message"))
        );
    }
}
