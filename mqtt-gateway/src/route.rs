//! Routes between MQTT topics and streams: which stream an inbound PUBLISH is appended to, which
//! key is recorded, and under which topic frames without MQTT metadata are delivered.

use crate::config::{PayloadType, RouteConfig};
use crate::topic;

/// One route, validated.
#[derive(Debug, Clone)]
pub struct Route {
    /// Topic filter of inbound PUBLISHes.
    pub filter: String,
    /// Target stream.
    pub stream: String,
    /// Topic level used as the key.
    pub key_level: Option<usize>,
    /// Template for frames without a topic (`{key}`, `{stream}`).
    pub outbound_topic: String,
    /// Payload size limit; larger payloads go to the dead-letter stream.
    pub max_payload_size: Option<usize>,
    /// Declared payload type.
    pub payload_type: Option<PayloadType>,
}

impl Route {
    /// The key for `topic_name` on this route.
    pub fn key_for(&self, topic_name: &str) -> Option<String> {
        self.key_level
            .and_then(|l| topic::level(topic_name, l))
            .map(str::to_owned)
    }
}

/// Routes in precedence order.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    streams: Vec<String>,
}

impl RouteTable {
    /// Builds the table (filters were validated with the config).
    pub fn new(configs: &[RouteConfig]) -> Self {
        let routes: Vec<Route> = configs
            .iter()
            .map(|c| Route {
                filter: c.filter.clone(),
                stream: c.stream.clone(),
                key_level: c.key_level,
                outbound_topic: c
                    .outbound_topic
                    .clone()
                    .unwrap_or_else(|| "{stream}".into()),
                max_payload_size: c.max_payload_size,
                payload_type: c.payload_type,
            })
            .collect();
        let mut streams: Vec<String> = Vec::new();
        for r in &routes {
            if !streams.contains(&r.stream) {
                streams.push(r.stream.clone());
            }
        }
        RouteTable { routes, streams }
    }

    /// The first route whose filter matches `topic_name`.
    pub fn inbound(&self, topic_name: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| topic::matches(topic_name, &r.filter))
    }

    /// Distinct routed streams, in first-mention order.
    pub fn streams(&self) -> &[String] {
        &self.streams
    }

    /// Topic under which a frame of `stream` without MQTT metadata is delivered, from the first
    /// route of that stream. `None` when the template needs a key the frame lacks.
    pub fn outbound_topic(&self, stream: &str, key: Option<&str>) -> Option<String> {
        let route = self.routes.iter().find(|r| r.stream == stream)?;
        let t = route.outbound_topic.replace("{stream}", stream);
        let t = if t.contains("{key}") {
            t.replace("{key}", key?)
        } else {
            t
        };
        topic::valid_topic_name(&t).then_some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(filter: &str, stream: &str, key: Option<usize>, out: Option<&str>) -> RouteConfig {
        RouteConfig {
            filter: filter.into(),
            stream: stream.into(),
            key_level: key,
            outbound_topic: out.map(Into::into),
            max_payload_size: None,
            payload_type: None,
        }
    }

    #[test]
    fn first_match_wins_and_keys_come_from_levels() {
        let t = RouteTable::new(&[
            rc("sensors/+/temperature", "temps", Some(1), None),
            rc("devices/+/cmd", "cmds", Some(1), Some("devices/{key}/cmd")),
            rc("#", "mqtt", None, None),
        ]);
        let r = t.inbound("sensors/d7/temperature").unwrap();
        assert_eq!(r.stream, "temps");
        assert_eq!(r.key_for("sensors/d7/temperature").as_deref(), Some("d7"));
        assert_eq!(t.inbound("other").unwrap().stream, "mqtt");
        assert!(t.inbound("$SYS/x").is_none());
        assert_eq!(t.streams(), &["temps", "cmds", "mqtt"]);
        assert_eq!(
            t.outbound_topic("cmds", Some("d9")).as_deref(),
            Some("devices/d9/cmd")
        );
        assert_eq!(t.outbound_topic("cmds", None), None);
        assert_eq!(t.outbound_topic("mqtt", None).as_deref(), Some("mqtt"));
        assert_eq!(t.outbound_topic("nope", None), None);
        assert_eq!(t.outbound_topic("cmds", Some("a/+")), None);
    }
}
