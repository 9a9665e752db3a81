//! ITU-T G.711 μ-law (PCMU) and A-law (PCMA) companding.
//!
//! Telephone audio is 8 kHz, 8 bits per sample, companded. These are the
//! reference segment algorithms from G.711 itself, bit-exact with the tables
//! every telephone switch uses.

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Encode one 16-bit linear sample as μ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut pcm = sample as i32;
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    pcm = pcm.min(CLIP) + BIAS;
    let exponent = (7 - ((pcm as u32) << 17).leading_zeros().min(7)) as i32;
    let mantissa = (pcm >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// Decode one μ-law byte to a 16-bit linear sample.
pub fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte as i32;
    let exponent = (u >> 4) & 0x07;
    let mantissa = u & 0x0F;
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Encode one 16-bit linear sample as A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    // A-law works on 13-bit magnitudes.
    let mut pcm = (sample as i32) >> 3;
    let mask = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    // Segment = index of the highest set bit above bit 4, 0..=7.
    let seg = (32 - (pcm as u32 | 0x1F).leading_zeros()) as i32 - 5;
    let mantissa = if seg < 2 { pcm >> 1 } else { pcm >> seg } & 0x0F;
    (((seg << 4) | mantissa) as u8) ^ mask
}

/// Decode one A-law byte to a 16-bit linear sample.
pub fn alaw_to_linear(byte: u8) -> i16 {
    let a = (byte ^ 0x55) as i32;
    let seg = (a & 0x70) >> 4;
    let mut t = (a & 0x0F) << 4;
    t += if seg == 0 { 8 } else { 0x108 };
    if seg > 1 {
        t <<= seg - 1;
    }
    if a & 0x80 != 0 { t as i16 } else { -t as i16 }
}

pub fn encode_ulaw(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().copied().map(linear_to_ulaw).collect()
}

pub fn decode_ulaw(bytes: &[u8]) -> Vec<i16> {
    bytes.iter().copied().map(ulaw_to_linear).collect()
}

pub fn encode_alaw(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().copied().map(linear_to_alaw).collect()
}

pub fn decode_alaw(bytes: &[u8]) -> Vec<i16> {
    bytes.iter().copied().map(alaw_to_linear).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        // Reference points from G.711: silence, full scale positive and negative.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(32767), 0x80);
        assert_eq!(linear_to_ulaw(-32768), 0x00);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(linear_to_alaw(32767), 0xAA);
        assert_eq!(alaw_to_linear(0xAA), 32256);
    }

    #[test]
    fn every_code_round_trips() {
        for b in 0..=255u8 {
            // 0x7F and 0xFF both decode to zero in μ-law; zero encodes as 0xFF.
            let back = linear_to_ulaw(ulaw_to_linear(b));
            assert!(
                back == b || (ulaw_to_linear(b) == 0 && back == 0xFF),
                "ulaw {b:#x}"
            );
            assert_eq!(linear_to_alaw(alaw_to_linear(b)), b, "alaw {b:#x}");
        }
    }

    #[test]
    fn companding_error_is_bounded() {
        for s in (-32768i32..=32767).step_by(7) {
            let s = s as i16;
            let u = ulaw_to_linear(linear_to_ulaw(s)) as i32;
            let a = alaw_to_linear(linear_to_alaw(s)) as i32;
            // Quantisation step doubles per segment; the largest is 1024 (μ) / 1024 (A).
            assert!((u - s as i32).abs() <= 1024, "ulaw {s} -> {u}");
            assert!((a - s as i32).abs() <= 1024, "alaw {s} -> {a}");
        }
    }
}
