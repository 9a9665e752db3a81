//! `voicecare bench …`: one module per benchmark. Built only with the `bench`
//! feature (on by default): benchmarks run in throwaway databases from the
//! store's `testing` support, which a production build leaves out.

use clap::Subcommand;

pub mod asr;
pub mod calls;
pub mod capacity;
pub mod consoles;
pub mod cpu;
pub mod flow;
pub mod queue;
pub mod sip;

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Speech recognition speed, memory and accuracy over audio-fixtures/, against faster-whisper.
    Asr(asr::AsrBenchArgs),
    /// Escalation claims per second against a raw SKIP LOCKED loop; NOTIFY latency.
    Queue(queue::QueueBenchArgs),
    /// Concurrent calls one node sustains with packet timing and turn latency in target.
    Capacity(capacity::CapacityBenchArgs),
    /// A floor of operators' consoles (event streams, queue reloads, claims) with check-in calls on one node: API latency against one console alone, memory, nothing lost.
    Consoles(consoles::ConsolesBenchArgs),
    /// Check-in calls to simulated phones: turn latency, call setup, packet timing, CPU per call.
    Calls(calls::CallsBenchArgs),
    /// Time to parse and check a flow as it grows, against parsing the same TOML alone.
    Flow(flow::FlowBenchArgs),
    /// Phone calls over SIP (G.711 media) against WebRTC calls in the same run: setups per second, CPU per call.
    Sip(sip::SipBenchArgs),
}
