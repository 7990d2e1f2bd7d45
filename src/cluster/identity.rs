//! Who this instance is: its id (`FLY_MACHINE_ID` on Fly, else configured or generated), region,
//! the URL peers reach it on, and how requests for calls owned elsewhere are routed.

use crate::config::{RoutingSetting, Settings};

/// How a request for a call owned by another instance reaches that owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Answer `fly-replay: instance=<owner>`; Fly's proxy replays the request there (WebSocket
    /// upgrades included).
    FlyReplay,
    /// Forward webhooks and API commands to the owner's private URL; media sockets reach the
    /// owner directly because each instance's `stream_url` names its own public URL.
    Forward,
}

impl Routing {
    pub fn as_str(self) -> &'static str {
        match self {
            Routing::FlyReplay => "fly-replay",
            Routing::Forward => "forward",
        }
    }
}

/// This instance, as its peers see it in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub region: String,
    pub routing: Routing,
    /// Where peers send forwarded requests (`http://host:port`, no trailing slash).
    pub private_url: String,
    /// Where providers reach this instance (`server.public_url`).
    pub public_url: String,
}

impl Identity {
    /// Resolves the identity from the settings and the process environment; `port` is the port
    /// actually bound (the configured one may be 0).
    pub fn resolve(settings: &Settings, port: u16) -> Self {
        Self::resolve_with(settings, port, |name| {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty())
        })
    }

    /// [`Identity::resolve`] with the environment given as a function (unit tests).
    pub fn resolve_with(
        settings: &Settings,
        port: u16,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let c = &settings.cluster;
        let machine = env("FLY_MACHINE_ID");
        let id = if !c.instance_id.trim().is_empty() {
            c.instance_id.trim().to_owned()
        } else if let Some(machine) = &machine {
            machine.clone()
        } else {
            // Not on Fly and nothing configured: a fresh id per start. Rows left live by an
            // earlier run under another id are then found by the sweeper of a peer (or of this
            // instance) once that id's heartbeat is gone.
            format!("i-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
        };
        let region = if !c.region.trim().is_empty() {
            c.region.trim().to_owned()
        } else {
            env("FLY_REGION").unwrap_or_else(|| "local".to_owned())
        };
        let routing = match c.routing {
            RoutingSetting::FlyReplay => Routing::FlyReplay,
            RoutingSetting::Forward => Routing::Forward,
            RoutingSetting::Auto if machine.is_some() => Routing::FlyReplay,
            RoutingSetting::Auto => Routing::Forward,
        };
        let private_url = if !c.private_url.trim().is_empty() {
            c.private_url.trim().trim_end_matches('/').to_owned()
        } else if let (Some(machine), Some(app)) = (&machine, env("FLY_APP_NAME")) {
            // Fly's private network names each Machine `<id>.vm.<app>.internal`.
            format!("http://{machine}.vm.{app}.internal:{port}")
        } else {
            let host = match settings.server.host.as_str() {
                "0.0.0.0" | "::" | "[::]" => "127.0.0.1",
                other => other,
            };
            format!("http://{host}:{port}")
        };
        Self {
            id,
            region,
            routing,
            private_url,
            public_url: settings.server.public_url.trim_end_matches('/').to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Environment;

    fn settings() -> Settings {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
        Settings::load_for(&dir, Environment::Test).expect("test settings")
    }

    #[test]
    fn on_fly_the_machine_id_names_the_instance_and_routing_is_fly_replay() {
        let s = settings();
        let env = |name: &str| match name {
            "FLY_MACHINE_ID" => Some("148e21ea7d5389".to_owned()),
            "FLY_REGION" => Some("ams".to_owned()),
            "FLY_APP_NAME" => Some("iace".to_owned()),
            _ => None,
        };
        let id = Identity::resolve_with(&s, 8080, env);
        assert_eq!(id.id, "148e21ea7d5389");
        assert_eq!(id.region, "ams");
        assert_eq!(id.routing, Routing::FlyReplay);
        assert_eq!(
            id.private_url,
            "http://148e21ea7d5389.vm.iace.internal:8080"
        );
    }

    #[test]
    fn elsewhere_the_id_is_generated_and_routing_is_forward() {
        let mut s = settings();
        s.server.host = "0.0.0.0".into();
        let a = Identity::resolve_with(&s, 9000, |_| None);
        let b = Identity::resolve_with(&s, 9000, |_| None);
        assert_ne!(a.id, b.id, "each start gets its own id");
        assert!(a.id.starts_with("i-"));
        assert_eq!(a.region, "local");
        assert_eq!(a.routing, Routing::Forward);
        assert_eq!(a.private_url, "http://127.0.0.1:9000");
    }

    #[test]
    fn configured_values_win_over_the_environment() {
        let mut s = settings();
        s.cluster.instance_id = "engine-a".into();
        s.cluster.routing = RoutingSetting::Forward;
        s.cluster.private_url = "http://10.0.0.7:8080/".into();
        let id = Identity::resolve_with(&s, 1, |_| Some("from-env".to_owned()));
        assert_eq!(id.id, "engine-a");
        assert_eq!(id.routing, Routing::Forward);
        assert_eq!(id.private_url, "http://10.0.0.7:8080");
    }
}
