//! With no sound card, opening the device says so plainly instead of
//! passing on cpal's DeviceNotAvailable.

#![cfg(all(feature = "cpal", target_os = "linux"))]

use voicecare_telephony::TelephonyError;
use voicecare_telephony::device::{AudioDevice, CpalDevice};

#[test]
fn no_sound_card_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    // Point the default device at a card that does not exist, so this holds
    // on machines with a sound card too.
    std::fs::write(
        dir.path().join(".asoundrc"),
        "pcm.!default { type hw; card 29 }\nctl.!default { type hw; card 29 }\n",
    )
    .unwrap();
    // ALSA reads ~/.asoundrc; this test binary has no other tests running.
    unsafe { std::env::set_var("HOME", dir.path()) };
    let err = CpalDevice.open().err().expect("no card here");
    assert!(matches!(err, TelephonyError::NoSoundCard), "{err:?}");
    assert_eq!(err.to_string(), "no sound card found");
}
