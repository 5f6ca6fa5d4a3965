//! The master's `POST /publish/` (DESIGN.md §8) as the holder answers it: Pushpin's EPCP JSON
//! parsed whole ([`super::epcp`]; one bad item refuses all, `400` with a one-line reason), then
//! published through the broker; `503` while the broker is unreachable. What the broker took
//! is counted on the holder (the master's `messages published`; refusals count nothing).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::body::Bytes;

use super::broker::BrokerError;
use super::epcp;
use super::holder::Holder;
use crate::status::http::{PublishOutcome, Publisher};

/// The holder, as the status listener's publisher.
pub struct HoldPublisher(pub Arc<Holder>);

impl Publisher for HoldPublisher {
    fn publish(&self, body: Bytes) -> Pin<Box<dyn Future<Output = PublishOutcome> + Send>> {
        let holder = Arc::clone(&self.0);
        Box::pin(async move {
            let items = match epcp::parse(&body) {
                Ok(items) => items,
                Err(e) => return PublishOutcome::text(400, format!("{e}\n")),
            };
            match holder.broker().publish(items).await {
                Ok(published) => {
                    holder.count_published(published.len());
                    let items: Vec<serde_json::Value> = published
                        .iter()
                        .map(|p| {
                            serde_json::json!({
                                "channel": p.channel,
                                "id": p.id,
                                "subscribers": p.subscribers,
                            })
                        })
                        .collect();
                    PublishOutcome {
                        status: 200,
                        content_type: "application/json",
                        body: format!("{}\n", serde_json::json!({ "published": items })),
                    }
                }
                Err(BrokerError::Unavailable(why)) => {
                    PublishOutcome::text(503, format!("broker unavailable: {why}\n"))
                }
                Err(e) => PublishOutcome::text(500, format!("{e}\n")),
            }
        })
    }
}
