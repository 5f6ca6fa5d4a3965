//! The Redis broker: several fastpm instances share ids and history in one Redis, so a
//! publish on any instance answers the requests held on every instance and a resume works on
//! any of them (DESIGN §8, like nchan's and Centrifugo's Redis engines).
//!
//! In Redis, per channel (keys under `fastpm:`, in the URL's database):
//! - `fastpm:id:CHANNEL`: the counter that gives ids (INCR, from 1);
//! - `fastpm:history:CHANNEL`: a stream of the last `history` messages, entry id `ID-0`, fields
//!   `code`, `reason` (empty: none), `headers` (a JSON array of `[name, value]`), `body` (bytes).
//!
//! A publish is one Lua script, atomic per batch: INCR, XADD with `MAXLEN history`, and PUBLISH
//! of the whole message to one pub/sub channel, `fastpm:messages:DB`. Every instance keeps one
//! subscription to it and gives what arrives to its [`Hub`], its own publishes included, so
//! local and remote delivery are one path. The pub/sub payload is six length-prefixed frames
//! (`LEN:BYTES`): channel, id, code, reason, headers, body.
//!
//! A resume (a want with `after`) registers on the hub first, then asks the stream for the
//! first entry from `after+1`: a message published in between is in the stream or reaches the
//! registration, never neither. Ids are given without holes, so the ids between `after` and
//! the entry found were trimmed: that is `lost`. A message the client already has can, in a
//! short window, still be on its way to this instance's pub/sub link when it resumes here:
//! then it is delivered again (a duplicate with the same id, never a loss; the hub does not
//! filter by id, because after Redis lost its data ids start again at 1).
//!
//! When Redis is unreachable: a publish fails at once (or within [`TIMEOUT`]) with
//! `Unavailable`; a resume waits (history unreachable); held requests stay held. A publish that
//! timed out may still have happened inside Redis (it is delivered if so). A failed command
//! makes the link task PING both connections at once (otherwise every 5 s); one that does not
//! answer within [`TIMEOUT`] counts as down. One task reconnects with back-off (100 ms
//! doubling to 5 s), subscribes again, and logs once per state change. A message published by
//! another instance while this one's link is down does not reach its waiters: they time out
//! and resume with their last id, which the stream answers.
//!
//! Memory in Redis is bounded like the memory broker's: (channels ever published) × `history`
//! messages, plus one counter per channel; nothing expires yet.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::streams::{StreamId, StreamRangeReply};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisResult,
    Script, Value,
};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::broker::{channel_names, lost_between, BrokerError, Published, Subscribed, Want};
use super::channels::Hub;
use super::message::{HttpResponse, Message, Publication};

/// Longest wait for one Redis command or connection attempt: a publish must fail fast (503)
/// rather than hang while Redis is away.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// How often the pub/sub link is pinged, so a peer that vanished without closing is noticed.
const PING_EVERY: Duration = Duration::from_secs(5);

/// INCR + XADD + PUBLISH per item, atomically (see the module comment for the layout).
const PUBLISH_LUA: &str = r#"
local function frame(s) return #s .. ':' .. s end
local out = {}
for i = 1, #KEYS / 2 do
  local a = 2 + (i - 1) * 5
  local channel, code, reason = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local headers, body = ARGV[a + 4], ARGV[a + 5]
  local id = redis.call('INCR', KEYS[2 * i - 1])
  local idtext = string.format('%d', id)
  redis.call('XADD', KEYS[2 * i], 'MAXLEN', ARGV[1], idtext .. '-0',
    'code', code, 'reason', reason, 'headers', headers, 'body', body)
  local payload = frame(channel) .. frame(idtext) .. frame(code) .. frame(reason)
    .. frame(headers) .. frame(body)
  out[#out + 1] = id
  out[#out + 1] = redis.call('PUBLISH', ARGV[2], payload)
end
return out
"#;

static PUBLISH: LazyLock<Script> = LazyLock::new(|| Script::new(PUBLISH_LUA));

fn id_key(channel: &str) -> String {
    format!("fastpm:id:{channel}")
}

fn history_key(channel: &str) -> String {
    format!("fastpm:history:{channel}")
}

/// Pub/sub channels are shared by every database of a server: the database is in the name so
/// two deployments on two databases of one Redis do not answer each other's requests.
fn pubsub_channel(db: i64) -> String {
    format!("fastpm:messages:{db}")
}

/// The `broker` setting's Redis forms: `redis://HOST:PORT[/DB]` (also user, password and the
/// query options the redis crate knows) and `unix:PATH` (a socket path, relative or absolute);
/// also `redis+unix:///PATH`, the client URL the config hands the master for `unix:PATH`
/// ([`BrokerUrl::client_url`](crate::config::BrokerUrl::client_url)).
pub fn parse_url(url: &str) -> Result<ConnectionInfo, BrokerError> {
    let bad = |reason: String| BrokerError::BadUrl {
        url: url.to_string(),
        reason,
    };
    if let Some(path) = url.strip_prefix("unix:") {
        if path.starts_with("//") {
            return url.into_connection_info().map_err(|e| bad(e.to_string()));
        }
        if path.is_empty() {
            return Err(bad("no socket path after unix:".into()));
        }
        return ConnectionAddr::Unix(PathBuf::from(path))
            .into_connection_info()
            .map_err(|e| bad(e.to_string()));
    }
    if !url.starts_with("redis://") && !url.starts_with("redis+unix://") {
        return Err(bad("expected redis://HOST:PORT[/DB] or unix:PATH".into()));
    }
    url.into_connection_info().map_err(|e| bad(e.to_string()))
}

/// Reconnect delays: 100 ms doubling to 5 s; back to the start after a good connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    fn delay(&mut self) -> Duration {
        let now = self.next;
        self.next = (now * 2).min(Self::MAX);
        now
    }
}

pub(crate) struct RedisBroker {
    shared: Arc<Shared>,
    /// The connection task: it lives as long as the broker (aborted on drop).
    task: AbortHandle,
}

/// What the broker handle and its connection task share.
struct Shared {
    hub: Arc<Hub>,
    client: Client,
    history: usize,
    /// `fastpm:messages:DB`.
    pubsub: String,
    /// Where Redis is, for log lines.
    addr: String,
    /// The command connection while the link is up (publish, resume); `None` while down, so a
    /// publish fails at once instead of waiting for a connect.
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Connected and subscribed: what status reports.
    connected: AtomicBool,
    /// A command failed or timed out: the task checks both connections now instead of at the
    /// next periodic ping (and reconnects if either is gone).
    suspect: Notify,
}

/// One good connection: commands, and the pub/sub subscription.
struct Link {
    conn: MultiplexedConnection,
    sink: PubSubSink,
    stream: PubSubStream,
}

impl RedisBroker {
    pub(crate) fn start(url: &str, hub: Arc<Hub>, history: usize) -> Result<Self, BrokerError> {
        let info = parse_url(url)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BrokerError::NoRuntime)?;
        let db = info.redis_settings().db();
        let addr = info.addr().to_string();
        let client = Client::open(info).map_err(|e| BrokerError::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let shared = Arc::new(Shared {
            hub,
            client,
            history,
            pubsub: pubsub_channel(db),
            addr,
            conn: Mutex::new(None),
            connected: AtomicBool::new(false),
            suspect: Notify::new(),
        });
        let task = runtime.spawn(keep_connected(shared.clone())).abort_handle();
        Ok(RedisBroker { shared, task })
    }

    pub(crate) fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    pub(crate) async fn publish(
        &self,
        items: Vec<Publication>,
    ) -> Result<Vec<Published>, BrokerError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.shared.current().ok_or_else(|| {
            BrokerError::Unavailable(format!("redis at {} is not connected", self.shared.addr))
        })?;
        let mut invocation = PUBLISH.prepare_invoke();
        invocation.arg(self.shared.history).arg(&self.shared.pubsub);
        for item in &items {
            let response = &item.response;
            invocation
                .key(id_key(&item.channel))
                .key(history_key(&item.channel))
                .arg(&item.channel)
                .arg(response.code)
                .arg(response.reason.as_deref().unwrap_or(""))
                .arg(headers_json(&response.headers))
                .arg(&response.body[..]);
        }
        let reply: Vec<u64> = self
            .shared
            .command("publish", invocation.invoke_async(&mut conn))
            .await?;
        if reply.len() != items.len() * 2 {
            return Err(BrokerError::Unavailable(format!(
                "redis answered the publish script with {} numbers for {} items",
                reply.len(),
                items.len()
            )));
        }
        Ok(items
            .into_iter()
            .zip(reply.chunks(2))
            .map(|(item, pair)| Published {
                channel: item.channel,
                id: pair[0],
                subscribers: usize::try_from(pair[1]).unwrap_or(usize::MAX),
            })
            .collect())
    }

    pub(crate) async fn subscribe(&self, pool: usize, wants: &[Want]) -> Subscribed {
        // Register first: anything published from here on reaches the subscription.
        let subscription = self.shared.hub.subscribe(pool, &channel_names(wants));
        let resumes: Vec<(&Want, u64, u64)> = wants
            .iter()
            .filter_map(|w| {
                let after = w.after?;
                Some((w, after, after.checked_add(1)?))
            })
            .collect();
        if resumes.is_empty() {
            return Subscribed::Wait(subscription);
        }
        let Some(mut conn) = self.shared.current() else {
            return Subscribed::Wait(subscription); // history unreachable: hold
        };
        let mut pipe = redis::pipe();
        for (want, _, from) in &resumes {
            pipe.cmd("XRANGE")
                .arg(history_key(&want.channel))
                .arg(format!("{from}-0"))
                .arg("+")
                .arg("COUNT")
                .arg(1);
        }
        let replies: Vec<StreamRangeReply> = match self
            .shared
            .command("resume", pipe.query_async(&mut conn))
            .await
        {
            Ok(replies) => replies,
            Err(e) => {
                tracing::debug!(error = %e, "resume without history: holding");
                return Subscribed::Wait(subscription);
            }
        };
        for ((want, after, _), reply) in resumes.iter().zip(replies) {
            let Some(entry) = reply.ids.first() else {
                continue;
            };
            match message_from_entry(&want.channel, entry) {
                Some(message) => {
                    let lost = lost_between(*after, message.id);
                    return Subscribed::Now {
                        message: Arc::new(message),
                        lost,
                    };
                }
                None => tracing::warn!(
                    channel = %want.channel,
                    entry = %entry.id,
                    "unreadable history entry in redis; ignored"
                ),
            }
        }
        Subscribed::Wait(subscription)
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn current(&self) -> Option<MultiplexedConnection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_link(&self, conn: Option<MultiplexedConnection>) {
        let up = conn.is_some();
        *self
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = conn;
        self.connected.store(up, Ordering::SeqCst);
    }

    /// Run one command within [`TIMEOUT`]; a failure makes the link task check the
    /// connections at once.
    async fn command<T>(
        &self,
        what: &str,
        command: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, BrokerError> {
        let result = within(what, command).await;
        if result.is_err() {
            self.suspect.notify_waiters();
        }
        result.map_err(|reason| BrokerError::Unavailable(format!("redis {reason}")))
    }
}

/// `command`'s result within [`TIMEOUT`], as a reason for a log line.
async fn within<T>(what: &str, command: impl Future<Output = RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, command).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {TIMEOUT:?}")),
    }
}

/// The connection task: connect, serve the pub/sub link until it breaks, wait, again.
async fn keep_connected(shared: Arc<Shared>) {
    let mut backoff = Backoff::new();
    // Whether "down" was logged since the last "connected" (log once per state change).
    let mut said_down = false;
    loop {
        match connect(&shared).await {
            Ok(link) => {
                backoff = Backoff::new();
                shared.set_link(Some(link.conn.clone()));
                tracing::info!(addr = %shared.addr, "broker: connected to redis");
                let reason = serve(&shared, link).await;
                shared.set_link(None);
                tracing::warn!(
                    addr = %shared.addr,
                    %reason,
                    "broker: lost redis; held requests stay held, publishes answer 503, reconnecting"
                );
                said_down = true;
            }
            Err(reason) if !said_down => {
                tracing::warn!(
                    addr = %shared.addr,
                    %reason,
                    "broker: cannot reach redis; publishes answer 503, retrying in the background"
                );
                said_down = true;
            }
            Err(reason) => {
                tracing::debug!(addr = %shared.addr, %reason, "broker: redis still down")
            }
        }
        tokio::time::sleep(backoff.delay()).await;
    }
}

async fn connect(shared: &Shared) -> Result<Link, String> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    let mut conn = within(
        "connect",
        shared
            .client
            .get_multiplexed_async_connection_with_config(&config),
    )
    .await?;
    // Loaded once per connection, so a publish is EVALSHA and a big body is sent once.
    within("SCRIPT LOAD", PUBLISH.load_async(&mut conn)).await?;
    let (mut sink, stream) = within("pub/sub connect", shared.client.get_async_pubsub())
        .await?
        .split();
    within("SUBSCRIBE", sink.subscribe(&shared.pubsub)).await?;
    Ok(Link { conn, sink, stream })
}

/// Deliver what arrives on the pub/sub link until either connection breaks; returns why.
async fn serve(shared: &Shared, link: Link) -> String {
    let Link {
        mut conn,
        mut sink,
        mut stream,
    } = link;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return "the pub/sub connection closed".into();
                };
                if message.get_channel_name() != shared.pubsub {
                    continue;
                }
                match decode_payload(message.get_payload_bytes()) {
                    Some(message) => {
                        shared.hub.deliver(Arc::new(message));
                    }
                    None => tracing::warn!(
                        channel = %shared.pubsub,
                        "unreadable message on the pub/sub channel; ignored"
                    ),
                }
            }
            _ = ping.tick() => {
                if let Err(reason) = healthy(&mut conn, &mut sink).await {
                    return reason;
                }
            }
            _ = shared.suspect.notified() => {
                if let Err(reason) = healthy(&mut conn, &mut sink).await {
                    return reason;
                }
                ping.reset();
            }
        }
    }
}

/// Both connections answer a PING within [`TIMEOUT`] (a multiplexed connection whose socket
/// died stays dead, so the command connection is checked as well as the pub/sub one).
async fn healthy(conn: &mut MultiplexedConnection, sink: &mut PubSubSink) -> Result<(), String> {
    let ping = redis::cmd("PING");
    let command = within("PING", ping.query_async::<Value>(conn));
    let pubsub = within("PING (pub/sub)", sink.ping::<Value>());
    tokio::try_join!(command, pubsub).map(|_| ())
}

fn headers_json(headers: &[(String, String)]) -> String {
    serde_json::to_string(headers).unwrap_or_else(|_| "[]".into())
}

/// A message from its stored parts; `None` when a part is unreadable.
fn message_from_parts(
    channel: &str,
    id: u64,
    code: &[u8],
    reason: &[u8],
    headers: &[u8],
    body: Vec<u8>,
) -> Option<Message> {
    let code: u16 = std::str::from_utf8(code).ok()?.parse().ok()?;
    let reason = match reason {
        b"" => None,
        text => Some(String::from_utf8(text.to_vec()).ok()?),
    };
    let headers: Vec<(String, String)> = serde_json::from_slice(headers).ok()?;
    Some(Message {
        channel: channel.to_string(),
        id,
        response: HttpResponse {
            code,
            reason,
            headers,
            body,
        },
    })
}

/// A history stream entry (`ID-0` and its fields) as a message of `channel`.
fn message_from_entry(channel: &str, entry: &StreamId) -> Option<Message> {
    let (id, _) = entry.id.split_once('-')?;
    let field = |name: &str| match entry.map.get(name) {
        Some(Value::BulkString(bytes)) => Some(bytes.as_slice()),
        _ => None,
    };
    message_from_parts(
        channel,
        id.parse().ok()?,
        field("code")?,
        field("reason")?,
        field("headers")?,
        field("body")?.to_vec(),
    )
}

/// The pub/sub payload the script builds: six `LEN:BYTES` frames, nothing after them.
fn decode_payload(payload: &[u8]) -> Option<Message> {
    let mut rest = payload;
    let mut frames: [&[u8]; 6] = [&[]; 6];
    for frame in frames.iter_mut() {
        let colon = rest.iter().take(21).position(|&b| b == b':')?;
        let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
        let end = (colon + 1).checked_add(len)?;
        *frame = rest.get(colon + 1..end)?;
        rest = &rest[end..];
    }
    if !rest.is_empty() {
        return None;
    }
    let [channel, id, code, reason, headers, body] = frames;
    let id = std::str::from_utf8(id).ok()?.parse().ok()?;
    message_from_parts(
        std::str::from_utf8(channel).ok()?,
        id,
        code,
        reason,
        headers,
        body.to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the Lua script sends, built the same way (frames of `#s .. ':' .. s`).
    fn payload(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(format!("{}:", part.len()).as_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    #[test]
    fn payloads_decode_exactly_or_not_at_all() {
        let body: &[u8] = b"bin\0ary:12:\r\n";
        let good = payload(&[
            b"room/1",
            b"42",
            b"200",
            b"",
            br#"[["Content-Type","text/plain"],["X-A","b:c"]]"#,
            body,
        ]);
        let m = decode_payload(&good).expect("decodes");
        assert_eq!((m.channel.as_str(), m.id), ("room/1", 42));
        assert_eq!(m.response.code, 200);
        assert_eq!(m.response.reason, None);
        assert_eq!(m.response.body, body);
        assert_eq!(
            m.response.headers,
            vec![
                ("Content-Type".to_string(), "text/plain".to_string()),
                ("X-A".to_string(), "b:c".to_string())
            ]
        );
        let with_reason = payload(&[b"c", b"1", b"404", b"Gone Away", b"[]", b""]);
        assert_eq!(
            decode_payload(&with_reason)
                .unwrap()
                .response
                .reason
                .as_deref(),
            Some("Gone Away")
        );
        let mut trailing = good.clone();
        trailing.push(b'x');
        for bad in [
            &good[..good.len() - 1],                                  // short body
            &trailing[..],                                            // bytes after the frames
            &payload(&[b"c", b"x", b"200", b"", b"[]", b""])[..],     // id not a number
            &payload(&[b"c", b"1", b"2000000", b"", b"[]", b""])[..], // code out of range
            &payload(&[b"c", b"1", b"200", b"", b"{}", b""])[..],     // headers not pairs
            &payload(&[b"c", b"1", b"200", b"", b"[]"])[..],          // five frames
            b"99999999999999999999999:x",                             // length overflow
            b"",
        ] {
            assert!(
                decode_payload(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn broker_urls() {
        let tcp = parse_url("redis://127.0.0.1:6380/3").unwrap();
        assert!(matches!(tcp.addr(), ConnectionAddr::Tcp(h, 6380) if h == "127.0.0.1"));
        assert_eq!(tcp.redis_settings().db(), 3);
        let default_db = parse_url("redis://localhost:6379").unwrap();
        assert_eq!(default_db.redis_settings().db(), 0);
        for (url, path) in [
            ("unix:/run/redis/redis.sock", "/run/redis/redis.sock"),
            ("unix:run/redis.sock", "run/redis.sock"),
            ("unix:///tmp/r.sock", "/tmp/r.sock"),
            ("redis+unix:///tmp/r.sock", "/tmp/r.sock"),
        ] {
            let info = parse_url(url).unwrap();
            assert!(
                matches!(info.addr(), ConnectionAddr::Unix(p) if p == &PathBuf::from(path)),
                "{url}: {:?}",
                info.addr()
            );
        }
        for bad in [
            "unix:",
            "http://localhost",
            "memory",
            "localhost:6379",
            "redis://",
        ] {
            assert!(
                matches!(parse_url(bad), Err(BrokerError::BadUrl { .. })),
                "{bad} accepted"
            );
        }
    }

    /// What the config accepts, the master passes on as its client URL: every form must be
    /// one this broker opens (a `unix:PATH` broker was once refused at start here).
    #[test]
    fn every_config_form_reaches_the_same_address() {
        use crate::config::parse_broker;
        let resolve = |p: &str| std::path::Path::new("/etc/fastpm").join(p);
        for (setting, addr) in [
            (
                "redis://10.0.0.5/2",
                ConnectionAddr::Tcp("10.0.0.5".into(), 6379),
            ),
            (
                "redis://[::1]:6380",
                ConnectionAddr::Tcp("::1".into(), 6380),
            ),
            (
                "unix:/run/redis.sock",
                ConnectionAddr::Unix("/run/redis.sock".into()),
            ),
            (
                "unix:redis.sock",
                ConnectionAddr::Unix("/etc/fastpm/redis.sock".into()),
            ),
        ] {
            let config = parse_broker(setting, resolve).unwrap();
            let url = config.client_url().expect("a redis broker");
            let info = parse_url(url).unwrap_or_else(|e| panic!("{setting} → {url}: {e}"));
            assert_eq!(info.addr(), &addr, "{setting} → {url}");
        }
    }

    #[test]
    fn backoff_doubles_from_100ms_to_5s() {
        let mut b = Backoff::new();
        let delays: Vec<u128> = (0..9).map(|_| b.delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn pubsub_channel_names_the_database() {
        assert_eq!(pubsub_channel(0), "fastpm:messages:0");
        assert_eq!(pubsub_channel(5), "fastpm:messages:5");
        assert_ne!(id_key("a"), history_key("a"));
    }

    #[tokio::test]
    async fn outside_a_runtime_is_an_error_not_a_panic() {
        // Inside one (this test) it starts; the connect fails in the background only.
        let hub = Hub::new(1);
        let broker = RedisBroker::start("unix:/nonexistent/redis.sock", hub.clone(), 10).unwrap();
        assert!(!broker.connected());
        let err = broker
            .publish(vec![Publication {
                channel: "c".into(),
                response: HttpResponse::ok(Vec::new(), None),
            }])
            .await
            .unwrap_err();
        assert!(matches!(err, BrokerError::Unavailable(_)), "{err}");
        drop(broker);
        let outside = std::thread::spawn(move || RedisBroker::start("redis://h:1", hub, 1).err())
            .join()
            .unwrap();
        assert!(matches!(outside, Some(BrokerError::NoRuntime)));
    }
}
