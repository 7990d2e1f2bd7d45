//! Several `iace serve` processes as one engine (issue 11): calls routed to their owner through
//! a front proxy that honours `fly-replay` (and through forwarding without it), orphans of a
//! killed instance ended within 10 s, drain on SIGTERM, admission control; plus the Redis
//! directory and leases on their own.

mod calls;
mod cpu_watermark;
mod fixture;
mod front_proxy;
mod redis_keys;
mod stall;
mod supervision;
