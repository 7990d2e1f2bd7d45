//! Telephone audio: the two G.711 codecs a call can use (μ-law and A-law at 8000 Hz), their names
//! in each provider's protocol, sample conversion, frame energy for speech detection, and
//! generators of silence and "speech-like" audio for simulators and tests.
//!
//! The engine never transcodes on the live path (Telnyx, Deepgram and Cartesia all speak the
//! call's codec); decoding here serves energy measurement, tests and simulators.

use std::fmt;

/// Sample rate of every G.711 stream, in Hz.
pub const SAMPLE_RATE: u32 = 8000;
/// Duration of one media frame, in milliseconds (what Telnyx sends and Deepgram expects).
pub const FRAME_MS: u32 = 20;
/// Bytes in one 20 ms G.711 frame at 8000 Hz: one byte per sample.
pub const FRAME_BYTES: usize = (SAMPLE_RATE * FRAME_MS / 1000) as usize;

/// A G.711 codec. One byte per sample, 8000 samples per second, mono.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 μ-law (North America, Japan).
    Pcmu,
    /// G.711 A-law (most of the rest of the world).
    Pcma,
}

/// A codec name this engine cannot handle (e.g. `G722`, `OPUS`), with the name as received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported audio codec {0:?} (expected PCMU or PCMA)")]
pub struct UnsupportedCodec(pub String);

impl Codec {
    /// Parses Telnyx `media_format.encoding` / `stream_codec` (`PCMU`, `PCMA`).
    pub fn from_telnyx(name: &str) -> Result<Self, UnsupportedCodec> {
        match name.trim().to_ascii_uppercase().as_str() {
            "PCMU" => Ok(Codec::Pcmu),
            "PCMA" => Ok(Codec::Pcma),
            _ => Err(UnsupportedCodec(name.to_owned())),
        }
    }

    /// Parses a Deepgram `encoding` query value (`mulaw`, `alaw`).
    pub fn from_deepgram(name: &str) -> Result<Self, UnsupportedCodec> {
        match name {
            "mulaw" => Ok(Codec::Pcmu),
            "alaw" => Ok(Codec::Pcma),
            _ => Err(UnsupportedCodec(name.to_owned())),
        }
    }

    /// Parses a Cartesia `output_format.encoding` value (`pcm_mulaw`, `pcm_alaw`).
    pub fn from_cartesia(name: &str) -> Result<Self, UnsupportedCodec> {
        match name {
            "pcm_mulaw" => Ok(Codec::Pcmu),
            "pcm_alaw" => Ok(Codec::Pcma),
            _ => Err(UnsupportedCodec(name.to_owned())),
        }
    }

    /// The Telnyx name: `PCMU` or `PCMA`.
    pub fn telnyx_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The Deepgram `encoding` query value: `mulaw` or `alaw`.
    pub fn deepgram_encoding(self) -> &'static str {
        match self {
            Codec::Pcmu => "mulaw",
            Codec::Pcma => "alaw",
        }
    }

    /// The Cartesia `output_format.encoding`: `pcm_mulaw` or `pcm_alaw`.
    pub fn cartesia_encoding(self) -> &'static str {
        match self {
            Codec::Pcmu => "pcm_mulaw",
            Codec::Pcma => "pcm_alaw",
        }
    }

    /// The byte that encodes a zero sample: what a silent frame is filled with.
    pub fn silence_byte(self) -> u8 {
        match self {
            Codec::Pcmu => 0xFF,
            Codec::Pcma => 0xD5,
        }
    }

    /// Encodes one 16-bit linear sample.
    pub fn encode_sample(self, sample: i16) -> u8 {
        match self {
            Codec::Pcmu => linear_to_ulaw(sample),
            Codec::Pcma => linear_to_alaw(sample),
        }
    }

    /// Decodes one byte to a 16-bit linear sample.
    pub fn decode_sample(self, byte: u8) -> i16 {
        match self {
            Codec::Pcmu => ulaw_to_linear(byte),
            Codec::Pcma => alaw_to_linear(byte),
        }
    }

    /// Encodes linear samples, one byte each.
    pub fn encode(self, samples: &[i16]) -> Vec<u8> {
        samples.iter().map(|&s| self.encode_sample(s)).collect()
    }

    /// Decodes bytes to linear samples.
    pub fn decode(self, bytes: &[u8]) -> Vec<i16> {
        bytes.iter().map(|&b| self.decode_sample(b)).collect()
    }

    /// Root-mean-square level of encoded audio (any length, typically one 20 ms frame), on the
    /// 16-bit linear scale: about 0 for silence, thousands for speech. Empty input is 0.
    pub fn energy(self, bytes: &[u8]) -> f32 {
        if bytes.is_empty() {
            return 0.0;
        }
        // Each byte's squared sample, from a table: a simulator measures every frame it hears.
        static SQUARES: std::sync::LazyLock<[[f64; 256]; 2]> = std::sync::LazyLock::new(|| {
            [Codec::Pcmu, Codec::Pcma].map(|codec| {
                std::array::from_fn(|b| {
                    let s = f64::from(codec.decode_sample(b as u8));
                    s * s
                })
            })
        });
        let squares = &SQUARES[self as usize];
        let sum: f64 = bytes.iter().map(|&b| squares[usize::from(b)]).sum();
        (sum / bytes.len() as f64).sqrt() as f32
    }

    /// `duration_ms` of digital silence.
    pub fn silence(self, duration_ms: u32) -> Vec<u8> {
        vec![self.silence_byte(); bytes_for_ms(duration_ms)]
    }

    /// `duration_ms` of deterministic "speech-like" audio: a few harmonics with a syllable-rate
    /// envelope and a little noise. Every 20 ms frame of it has an energy far above
    /// [`SPEECH_ENERGY_THRESHOLD`], so energy-based detectors see it as speech throughout.
    pub fn speech_like(self, duration_ms: u32) -> Vec<u8> {
        // The audio is the same from its first sample whatever its length, so a shorter one is
        // a prefix of a longer one: each codec's is made once (four sines a sample were the
        // largest share of a load run's CPU) and copied, made again only when a longer one is
        // asked for.
        static MADE: [std::sync::Mutex<Vec<u8>>; 2] = [
            std::sync::Mutex::new(Vec::new()),
            std::sync::Mutex::new(Vec::new()),
        ];
        let samples = bytes_for_ms(duration_ms);
        let mut made = MADE[self as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if made.len() < samples {
            *made = self.synthesize_speech(samples);
        }
        made[..samples].to_vec()
    }

    /// The first `samples` samples of [`Self::speech_like`] audio, computed.
    fn synthesize_speech(self, samples: usize) -> Vec<u8> {
        let rate = f64::from(SAMPLE_RATE);
        // A tiny LCG keeps the noise deterministic without a dependency on `rand`.
        let mut seed: u32 = 0x1234_5678;
        (0..samples)
            .map(|i| {
                let t = i as f64 / rate;
                // The envelope never drops below 0.6, so no frame looks like a pause.
                let envelope = 0.8 + 0.2 * (2.0 * std::f64::consts::PI * 4.0 * t).sin();
                let voiced = 0.5 * (2.0 * std::f64::consts::PI * 180.0 * t).sin()
                    + 0.3 * (2.0 * std::f64::consts::PI * 360.0 * t).sin()
                    + 0.2 * (2.0 * std::f64::consts::PI * 1100.0 * t).sin();
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = f64::from(seed >> 16) / 65_535.0 - 0.5;
                let value = 9000.0 * envelope * voiced + 800.0 * noise;
                self.encode_sample(value.clamp(-32768.0, 32767.0) as i16)
            })
            .collect()
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.telnyx_name())
    }
}

/// An RMS level (see [`Codec::energy`]) above which a frame counts as speech. Silence and line
/// noise sit well below it; normal speech sits well above it.
pub const SPEECH_ENERGY_THRESHOLD: f32 = 500.0;

/// Bytes of G.711 audio in `duration_ms` (one byte per sample at 8000 Hz).
pub fn bytes_for_ms(duration_ms: u32) -> usize {
    (u64::from(duration_ms) * u64::from(SAMPLE_RATE) / 1000) as usize
}

/// Milliseconds of G.711 audio in `bytes`.
pub fn ms_for_bytes(bytes: usize) -> u64 {
    bytes as u64 * 1000 / u64::from(SAMPLE_RATE)
}

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// G.711 μ-law encoder (the classic Sun reference algorithm).
fn linear_to_ulaw(sample: i16) -> u8 {
    let mut pcm = i32::from(sample);
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    pcm = pcm.min(ULAW_CLIP) + ULAW_BIAS;
    // pcm is now in 132..=32767: its top bit sits at position 7..=14, giving the segment 0..=7.
    let exponent = (31 - pcm.leading_zeros() as i32) - 7;
    let mantissa = (pcm >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// G.711 μ-law decoder.
fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let exponent = i32::from((u >> 4) & 0x07);
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Upper bounds of the A-law segments, on the 13-bit scale.
const ALAW_SEGMENT_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

/// G.711 A-law encoder (the classic Sun reference algorithm).
fn linear_to_alaw(sample: i16) -> u8 {
    let mut pcm = i32::from(sample) >> 3;
    let mask: i32 = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    let Some(segment) = ALAW_SEGMENT_END.iter().position(|&end| pcm <= end) else {
        return (0x7F ^ mask) as u8;
    };
    let segment = segment as i32;
    let shift = if segment < 2 { 1 } else { segment };
    let value = (segment << 4) | ((pcm >> shift) & 0x0F);
    (value ^ mask) as u8
}

/// G.711 A-law decoder.
fn alaw_to_linear(byte: u8) -> i16 {
    let a = i32::from(byte ^ 0x55);
    let mut magnitude = (a & 0x0F) << 4;
    let segment = (a & 0x70) >> 4;
    match segment {
        0 => magnitude += 8,
        1 => magnitude += 0x108,
        _ => magnitude = (magnitude + 0x108) << (segment - 1),
    }
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_like_audio_is_the_same_whichever_length_was_made_first() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let long = codec.speech_like(700);
            let short = codec.speech_like(300);
            assert_eq!(short.len(), bytes_for_ms(300));
            assert_eq!(short, codec.synthesize_speech(bytes_for_ms(300)));
            assert_eq!(long, codec.synthesize_speech(bytes_for_ms(700)));
            let longer = codec.speech_like(1200);
            assert_eq!(&longer[..long.len()], &long[..]);
        }
    }

    #[test]
    fn energy_from_the_table_is_the_rms_of_the_decoded_samples() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let frame = codec.speech_like(20);
            let samples = codec.decode(&frame);
            let rms = (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>()
                / samples.len() as f64)
                .sqrt() as f32;
            assert!((codec.energy(&frame) - rms).abs() < 1e-3, "{codec}");
            assert!(
                codec.energy(&codec.silence(20)) < 10.0,
                "{codec}: silence is about 0"
            );
        }
    }

    #[test]
    fn codec_names_parse_for_every_provider() {
        assert_eq!(Codec::from_telnyx("PCMU"), Ok(Codec::Pcmu));
        assert_eq!(Codec::from_telnyx("pcma"), Ok(Codec::Pcma));
        assert!(Codec::from_telnyx("G722").is_err());
        assert_eq!(Codec::from_deepgram("mulaw"), Ok(Codec::Pcmu));
        assert_eq!(Codec::from_deepgram("alaw"), Ok(Codec::Pcma));
        assert!(Codec::from_deepgram("linear16").is_err());
        assert_eq!(Codec::from_cartesia("pcm_mulaw"), Ok(Codec::Pcmu));
        assert_eq!(Codec::from_cartesia("pcm_alaw"), Ok(Codec::Pcma));
        for codec in [Codec::Pcmu, Codec::Pcma] {
            assert_eq!(Codec::from_telnyx(codec.telnyx_name()), Ok(codec));
            assert_eq!(Codec::from_deepgram(codec.deepgram_encoding()), Ok(codec));
            assert_eq!(Codec::from_cartesia(codec.cartesia_encoding()), Ok(codec));
        }
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for byte in 0..=255u8 {
            // 0x7F is μ-law's "negative zero": it decodes to 0, which encodes as 0xFF.
            if byte != 0x7F {
                assert_eq!(
                    Codec::Pcmu.encode_sample(Codec::Pcmu.decode_sample(byte)),
                    byte
                );
            }
            assert_eq!(
                Codec::Pcma.encode_sample(Codec::Pcma.decode_sample(byte)),
                byte
            );
        }
    }

    #[test]
    fn samples_survive_encode_then_decode_within_quantisation_error() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            for sample in (-32768i32..=32767).step_by(97) {
                let sample = sample as i16;
                let back = codec.decode_sample(codec.encode_sample(sample));
                let error = (i32::from(back) - i32::from(sample)).abs();
                // G.711 keeps about 4 significant bits: the step grows with the magnitude.
                let allowed = (i32::from(sample).abs() / 16).max(16) + 8;
                assert!(error <= allowed, "{codec}: {sample} came back as {back}");
            }
        }
    }

    #[test]
    fn known_reference_values() {
        assert_eq!(Codec::Pcmu.encode_sample(0), 0xFF);
        assert_eq!(Codec::Pcma.encode_sample(0), 0xD5);
        assert_eq!(Codec::Pcmu.decode_sample(0x00), -32124);
        assert_eq!(Codec::Pcmu.decode_sample(0x80), 32124);
        assert_eq!(Codec::Pcma.decode_sample(0xAA), 32256);
        assert_eq!(Codec::Pcma.decode_sample(0x2A), -32256);
    }

    #[test]
    fn silence_has_about_zero_energy_and_speech_is_loud() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let silence = codec.silence(FRAME_MS);
            assert_eq!(silence.len(), FRAME_BYTES);
            assert!(codec.energy(&silence) < 10.0);
            let speech = codec.speech_like(1000);
            assert_eq!(speech.len(), 8000);
            for frame in speech.chunks(FRAME_BYTES) {
                let energy = codec.energy(frame);
                assert!(
                    energy > SPEECH_ENERGY_THRESHOLD * 4.0,
                    "{codec}: frame at {energy}"
                );
            }
        }
        assert_eq!(Codec::Pcmu.energy(&[]), 0.0);
    }

    #[test]
    fn framing_arithmetic_matches_the_protocol() {
        assert_eq!(FRAME_BYTES, 160);
        assert_eq!(bytes_for_ms(20), 160);
        assert_eq!(ms_for_bytes(8000), 1000);
    }
}
