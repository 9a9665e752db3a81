//! Place one call through a SIP trunk and report what the far end sent.
//!
//!   cargo run -p voicecare-sip --example dial -- <trunk host:port> <number> [seconds]
//!
//! With SIPp as the trunk (see docs/telephony.md) this is the whole gateway
//! by hand: ringing, the answer, audio and keypad digits, and the hang-up
//! after `seconds` (default 20) unless the far end hangs up first.

use std::time::Duration;

use voicecare_sip::{SipGateway, Trunk};
use voicecare_telephony::{LegConfig, LegEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [trunk, number, rest @ ..] = args.as_slice() else {
        eprintln!("usage: dial <trunk host:port> <number> [seconds]");
        std::process::exit(2);
    };
    let secs: u64 = rest.first().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let (host, port) = trunk.rsplit_once(':').ok_or("trunk must be host:port")?;
    let mut t = Trunk::new("by-hand", host, port.parse()?);
    t.bind = "127.0.0.1:0".parse()?;
    let gw = SipGateway::start(t, LegConfig::default()).await?;
    println!("calling {number} from {}", gw.local_addr());
    let mut leg = match gw.call(number).await {
        Ok(leg) => leg,
        Err(f) => {
            println!("not answered: {f} (outcome {:?})", f.setup_failure());
            return Ok(());
        }
    };
    println!("answered, {:?}", leg.codec());
    let control = leg.control();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        control.hang_up();
    });
    let mut frames = 0;
    while let Some(ev) = leg.next_event().await {
        match ev {
            LegEvent::Audio(_) => frames += 1,
            LegEvent::Digit(d) => println!("digit {d}"),
            LegEvent::Ended(r) => {
                println!("ended: {r:?} after {frames} frames of audio");
                break;
            }
            _ => {}
        }
    }
    Ok(())
}
