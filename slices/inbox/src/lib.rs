//! The `inbox` example slice: publishes to topics and receives messages, competing and broadcast.
//!
//! - `POST /inbox/publish/{topic}` publishes the request body to `topic` (`ctx.publish`) and answers what the
//!   node answered: 202 with `{"id", "topic"}` once the message is durably accepted, or the refusal (400 bad
//!   topic, 413 too large, 429 topic full, 503 not submitted, 504 may still apply).
//! - Topic `work` is delivered competing (each message to one instance) to `work`, topic `news` broadcast
//!   (each message to every instance) to `news`; the task `tick` runs every second.
//! - `GET /inbox/seen` answers, for the instance that serves it,
//!   `{"node", "work": [bodies], "news": [bodies], "ticks": N, "work_total": N, "news_total": N}`.
//! - `GET /inbox/received/{topic}?from=N&limit=M` answers the deliveries from the `N`-th since the instance
//!   started: body, receive time (`at_us`, wall clock), message id, publisher and attempt (for latency
//!   measurements); `DELETE /inbox/seen` forgets everything received.
//! - `POST /inbox/fail/{on|off}` makes this instance's `work` deliveries fail (500) or succeed again; the
//!   live config key `fail_work = "true"` does the same for every instance.
//! - Config `journal = "true"`: every delivery is also written to the slice's cluster state before it is
//!   acknowledged (see [`journal`]), so tests can count deliveries to an instance whose node was killed.
//!
//! Memory is bounded: the newest 100,000 deliveries (and 32 MiB of bodies) per topic (see [`record`]).

pub mod journal;
pub mod record;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use aether_sdk::{json, Config, Context, Method, Request, Response, Route, Schedule, Slice, Status, Subscription};

use journal::{Journal, Sink};
use record::{Delivery, Record};

/// Most deliveries one `received` answer lists.
const RECEIVED_LIMIT_MAX: usize = 100_000;

pub struct Inbox {
    ctx: Context,
    journal_on: bool,
    work: Topic,
    news: Topic,
    ticks: AtomicU64,
    fail_work: AtomicBool,
}

/// One subscribed topic: its in-memory record and its journal.
struct Topic {
    record: Mutex<Record>,
    journal: Journal,
}

impl Topic {
    fn new(name: &str, node: &str, boot: &str) -> Topic {
        Topic { record: Mutex::new(Record::default()), journal: Journal::new(name, node, boot) }
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        // A poisoned lock only means a call panicked while pushing to a plain queue.
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The slice's cluster state as the journal's sink.
struct ClusterState<'a>(&'a Context);

impl Sink for ClusterState<'_> {
    fn write(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.0.kv().put(key, value).map(|_| ()).map_err(|e| e.to_string())
    }
}

impl Slice for Inbox {
    const NAME: &'static str = "inbox";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const METHODS: &'static [Method] = &[
        Method::new("publish"),
        Method::new("seen"),
        Method::new("received"),
        Method::new("clear"),
        Method::new("fail"),
        Method::new("work"),
        Method::new("news"),
        Method::new("tick"),
    ];
    const ROUTES: &'static [Route] = &[
        Route::post("/inbox/publish/{topic}", "publish"),
        Route::get("/inbox/seen", "seen"),
        Route::delete("/inbox/seen", "clear"),
        Route::get("/inbox/received/{topic}", "received"),
        Route::post("/inbox/fail/{mode}", "fail"),
    ];
    const SUBSCRIPTIONS: &'static [Subscription] =
        &[Subscription::competing("work", "work"), Subscription::broadcast("news", "news")];
    const SCHEDULES: &'static [Schedule] = &[Schedule::every_ms("tick", 1000, "tick")];

    fn start(ctx: Context, config: &Config) -> Result<Inbox, aether_sdk::Error> {
        let boot = format!("{:x}", now_us());
        let node = ctx.node_id().to_owned();
        Ok(Inbox {
            journal_on: config.get("journal") == Some("true"),
            work: Topic::new("work", &node, &boot),
            news: Topic::new("news", &node, &boot),
            ticks: AtomicU64::new(0),
            fail_work: AtomicBool::new(false),
            ctx,
        })
    }

    fn call(&self, method: &str, request: &Request<'_>) -> Response {
        match method {
            "publish" => self.publish(request),
            "seen" => self.seen(),
            "received" => self.received(request),
            "clear" => self.clear(),
            "fail" => self.switch_failure(request),
            "work" => self.deliver_work(request),
            "news" => self.deliver(&self.news, request),
            _ => self.tick(),
        }
    }
}

impl Inbox {
    fn publish(&self, request: &Request<'_>) -> Response {
        match request.param("topic") {
            Some(topic) => self.ctx.publish(topic, request.body()),
            None => Response::error(Status::BAD_REQUEST, "path parameter `topic` is missing"),
        }
    }

    fn seen(&self) -> Response {
        let (work, work_total) = {
            let record = self.work.record();
            (record.bodies_json(), record.total())
        };
        let (news, news_total) = {
            let record = self.news.record();
            (record.bodies_json(), record.total())
        };
        let body = json::Object::new()
            .str("node", self.ctx.node_id())
            .raw("work", &work)
            .raw("news", &news)
            .int("ticks", count(self.ticks.load(Ordering::Relaxed)))
            .int("work_total", count(work_total))
            .int("news_total", count(news_total))
            .finish();
        Response::json(body).no_store()
    }

    fn received(&self, request: &Request<'_>) -> Response {
        let topic = match request.param("topic") {
            Some("work") => &self.work,
            Some("news") => &self.news,
            _ => return Response::error(Status::NOT_FOUND, "this slice receives topics `work` and `news` only"),
        };
        let from = match request.query("from").map(str::parse::<u64>) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => return Response::error(Status::BAD_REQUEST, "`from` must be a number"),
        };
        let limit = match request.query("limit").map(str::parse::<usize>) {
            None => RECEIVED_LIMIT_MAX,
            Some(Ok(n)) => n.min(RECEIVED_LIMIT_MAX),
            Some(Err(_)) => return Response::error(Status::BAD_REQUEST, "`limit` must be a number"),
        };
        let record = topic.record();
        let body = json::Object::new()
            .str("node", self.ctx.node_id())
            .int("total", count(record.total()))
            .raw("deliveries", &record.deliveries_json(from, limit))
            .finish();
        Response::json(body).no_store()
    }

    fn clear(&self) -> Response {
        self.work.record().clear();
        self.news.record().clear();
        Response::no_content()
    }

    fn switch_failure(&self, request: &Request<'_>) -> Response {
        let fail = match request.param("mode") {
            Some("on") => true,
            Some("off") => false,
            _ => return Response::error(Status::BAD_REQUEST, "mode must be `on` or `off`"),
        };
        self.fail_work.store(fail, Ordering::SeqCst);
        Response::json(json::Object::new().str("node", self.ctx.node_id()).bool("fail_work", fail).finish())
    }

    fn deliver_work(&self, request: &Request<'_>) -> Response {
        let failing = self.fail_work.load(Ordering::SeqCst) || self.ctx.config("fail_work").as_deref() == Some("true");
        if failing {
            return Response::error(Status::INTERNAL_SERVER_ERROR, "work deliveries fail on purpose (fail_work)");
        }
        self.deliver(&self.work, request)
    }

    /// Records one delivery (durably first when the journal is on) and acknowledges it.
    fn deliver(&self, topic: &Topic, request: &Request<'_>) -> Response {
        let body = String::from_utf8_lossy(request.body()).into_owned();
        if self.journal_on {
            if let Err(e) = topic.journal.record(&ClusterState(&self.ctx), &body) {
                return Response::error(Status::SERVICE_UNAVAILABLE, &format!("journal write failed: {e}"));
            }
        }
        let delivery = Delivery {
            body,
            at_us: now_us(),
            message_id: request.header("x-aether-message-id").unwrap_or_default().to_owned(),
            publisher: request.header("x-aether-publisher").unwrap_or_default().to_owned(),
            attempt: request.header("x-aether-attempt").and_then(|a| a.parse().ok()).unwrap_or(0),
        };
        topic.record().push(delivery);
        Response::no_content()
    }

    fn tick(&self) -> Response {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        Response::no_content()
    }
}

fn now_us() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

aether_sdk::export_slice!(Inbox);

#[cfg(test)]
mod tests {
    use super::*;
    use aether_sdk::RequestBuilder;

    fn inbox() -> Inbox {
        Inbox::start(Context::detached("node-1"), &Config::default()).unwrap()
    }

    fn call(inbox: &Inbox, method: &str, request: RequestBuilder) -> Response {
        let bytes = request.encode().unwrap();
        inbox.call(method, &Request::parse(&bytes).unwrap())
    }

    fn delivery(topic: &str, body: &str) -> RequestBuilder {
        RequestBuilder::new()
            .method("POST")
            .path(&format!("/topics/{topic}"))
            .header("X-Aether-Topic", topic)
            .header("X-Aether-Message-Id", "m-1")
            .header("X-Aether-Publisher", "api")
            .header("X-Aether-Attempt", "2")
            .body(body)
    }

    fn seen(inbox: &Inbox) -> json::Value {
        json::parse(&call(inbox, "seen", RequestBuilder::new()).body).unwrap()
    }

    #[test]
    fn deliveries_show_in_seen_per_topic_and_ticks_count() {
        let inbox = inbox();
        assert_eq!(call(&inbox, "work", delivery("work", "w1")).status, Status::NO_CONTENT);
        assert_eq!(call(&inbox, "news", delivery("news", "n1")).status, Status::NO_CONTENT);
        call(&inbox, "work", delivery("work", "w2"));
        call(&inbox, "tick", RequestBuilder::new());
        let seen = seen(&inbox);
        assert_eq!(seen.get("node").and_then(json::Value::as_str), Some("node-1"));
        let bodies = |topic: &str| match seen.get(topic) {
            Some(json::Value::Array(items)) => items.iter().filter_map(json::Value::as_str).collect::<Vec<_>>(),
            _ => panic!("no {topic}"),
        };
        assert_eq!(bodies("work"), ["w1", "w2"]);
        assert_eq!(bodies("news"), ["n1"]);
        assert_eq!(seen.get("ticks").and_then(json::Value::as_i64), Some(1));
    }

    #[test]
    fn received_lists_delivery_facts_from_an_index() {
        let inbox = inbox();
        for body in ["a", "b", "c"] {
            call(&inbox, "news", delivery("news", body));
        }
        let answer = call(&inbox, "received", RequestBuilder::new().param("topic", "news").query("from", "1"));
        let answer = json::parse(&answer.body).unwrap();
        assert_eq!(answer.get("total").and_then(json::Value::as_i64), Some(3));
        let Some(json::Value::Array(items)) = answer.get("deliveries") else { panic!("no deliveries") };
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].get("body").and_then(json::Value::as_str), Some("b"));
        assert_eq!(items[0].get("attempt").and_then(json::Value::as_i64), Some(2));
        assert_eq!(items[0].get("publisher").and_then(json::Value::as_str), Some("api"));
        assert!(items[0].get("at_us").and_then(json::Value::as_i64).is_some_and(|t| t > 0));
        let bad = call(&inbox, "received", RequestBuilder::new().param("topic", "other"));
        assert_eq!(bad.status, Status::NOT_FOUND);
    }

    #[test]
    fn failing_work_is_refused_until_switched_off() {
        let inbox = inbox();
        call(&inbox, "fail", RequestBuilder::new().param("mode", "on"));
        assert_eq!(call(&inbox, "work", delivery("work", "w")).status, Status::INTERNAL_SERVER_ERROR);
        assert_eq!(call(&inbox, "news", delivery("news", "n")).status, Status::NO_CONTENT, "news is unaffected");
        call(&inbox, "fail", RequestBuilder::new().param("mode", "off"));
        assert_eq!(call(&inbox, "work", delivery("work", "w")).status, Status::NO_CONTENT);
        assert_eq!(call(&inbox, "fail", RequestBuilder::new().param("mode", "x")).status, Status::BAD_REQUEST);
    }

    #[test]
    fn publishing_without_a_host_passes_the_refusal_on() {
        let inbox = inbox();
        let answer = call(&inbox, "publish", RequestBuilder::new().param("topic", "work").body("x"));
        assert_eq!(answer.status, Status::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn a_journal_that_cannot_write_refuses_the_delivery() {
        let config = Config::from_pairs([("journal", "true")]);
        let inbox = Inbox::start(Context::detached("node-1"), &config).unwrap();
        assert_eq!(call(&inbox, "work", delivery("work", "w")).status, Status::SERVICE_UNAVAILABLE);
        assert_eq!(seen(&inbox).get("work_total").and_then(json::Value::as_i64), Some(0), "not acknowledged");
        call(&inbox, "clear", RequestBuilder::new());
    }
}
