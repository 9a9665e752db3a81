//! Digest authentication for SIP (RFC 3261 §22, RFC 8760): answering a
//! trunk's 401 or 407 challenge with MD5 or SHA-256.
//!
//! Computed here rather than by the SIP stack because the stack reads the
//! algorithm token `SHA256`, not RFC 8760's `SHA-256`, and gives up on a
//! challenge it cannot read even when an MD5 one follows. We read every
//! challenge offered, take the strongest we know, and skip the rest.

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// A digest algorithm we can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// RFC 8760's tokens; an absent algorithm means MD5.
    fn parse(token: Option<&str>) -> Option<Algorithm> {
        match token.map(|t| t.trim().to_ascii_uppercase()).as_deref() {
            None | Some("MD5") => Some(Algorithm::Md5),
            // RFC 8760's token, and the form some stacks send instead.
            Some("SHA-256" | "SHA256") => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn hash(self, data: &str) -> String {
        let bytes: Vec<u8> = match self {
            Algorithm::Md5 => Md5::digest(data.as_bytes()).to_vec(),
            Algorithm::Sha256 => Sha256::digest(data.as_bytes()).to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One challenge from `WWW-Authenticate` or `Proxy-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// `qop=auth` was offered (we never use `auth-int`).
    pub qop_auth: bool,
}

impl Challenge {
    /// Read one challenge header value (`Digest realm="…", nonce="…", …`).
    /// `None` for another scheme, an algorithm we do not know, `auth-int`
    /// only, or a challenge without realm or nonce.
    pub fn parse(value: &str) -> Option<Challenge> {
        let rest = value.trim();
        let (scheme, params) = rest.split_once(char::is_whitespace)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return None;
        }
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut algorithm = None;
        let mut qop = None;
        for (k, v) in params_of(params) {
            match k.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(v),
                "nonce" => nonce = Some(v),
                "opaque" => opaque = Some(v),
                "algorithm" => algorithm = Some(v),
                "qop" => qop = Some(v),
                _ => {}
            }
        }
        let qop_auth = match &qop {
            None => false,
            Some(q) => {
                let auth = q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth"));
                if !auth {
                    return None; // auth-int only
                }
                true
            }
        };
        Some(Challenge {
            realm: realm?,
            nonce: nonce?,
            opaque,
            algorithm: Algorithm::parse(algorithm.as_deref())?,
            qop_auth,
        })
    }

    /// The strongest challenge we can answer among several headers.
    pub fn best<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
        values
            .into_iter()
            .filter_map(Challenge::parse)
            .max_by_key(|c| c.algorithm)
    }

    /// The `Authorization` (or `Proxy-Authorization`) value answering this
    /// challenge for `method` on `uri`. `cnonce` is random per answer.
    pub fn answer(
        &self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
    ) -> String {
        let alg = self.algorithm;
        let ha1 = alg.hash(&format!("{username}:{}:{password}", self.realm));
        let ha2 = alg.hash(&format!("{method}:{uri}"));
        let nc = "00000001";
        let response = if self.qop_auth {
            alg.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            alg.hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let mut v = format!(
            "Digest username=\"{username}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
            self.realm,
            self.nonce,
            alg.token()
        );
        if self.qop_auth {
            v.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        }
        if let Some(o) = &self.opaque {
            v.push_str(&format!(", opaque=\"{o}\""));
        }
        v
    }
}

/// `key=value` pairs of a challenge, values unquoted; commas inside quotes
/// (a `qop="auth,auth-int"`) stay in their value.
fn params_of(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_string();
        if key.is_empty() {
            return out;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next()),
                    '"' => break,
                    c => v.push(c),
                }
            }
            v
        } else {
            chars
                .by_ref()
                .take_while(|c| *c != ',')
                .collect::<String>()
                .trim()
                .to_string()
        };
        out.push((key, value));
    }
}

/// The header answering a 401 (`Authorization`) or 407
/// (`Proxy-Authorization`) to a `method` request for `uri`, with the
/// strongest digest the response offers. `None` without a challenge we can
/// answer.
pub(crate) fn authorization(
    resp: &rsipstack::sip::Response,
    creds: &crate::trunk::Credentials,
    method: &str,
    uri: &str,
) -> Option<rsipstack::sip::Header> {
    use rsipstack::sip::Header;
    let proxy = resp.status_code.code() == 407;
    let offered = resp.headers.iter().filter_map(|h| match h {
        Header::WwwAuthenticate(v) if !proxy => Some(v.value()),
        Header::ProxyAuthenticate(v) if proxy => Some(v.value()),
        _ => None,
    });
    let Some(challenge) = Challenge::best(offered) else {
        tracing::warn!("the trunk's challenge offers no digest algorithm we know (MD5, SHA-256)");
        return None;
    };
    let cnonce = format!("{:016x}", rand::random::<u64>());
    let value = challenge.answer(
        &creds.username,
        creds.password.expose(),
        method,
        uri,
        &cnonce,
    );
    tracing::debug!(algorithm = ?challenge.algorithm, proxy, method, "answering the trunk's digest challenge");
    Some(if proxy {
        Header::ProxyAuthorization(value.into())
    } else {
        Header::Authorization(value.into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7616 §3.9.1: the same request answered with SHA-256 and with MD5.
    const RFC7616_SHA256: &str = r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
    const RFC7616_MD5: &str = r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    fn response(header: &str) -> String {
        let v = header.split("response=\"").nth(1).unwrap();
        v[..v.find('"').unwrap()].to_string()
    }

    #[test]
    fn rfc7616_vectors() {
        let sha = Challenge::parse(RFC7616_SHA256).unwrap();
        assert_eq!(sha.algorithm, Algorithm::Sha256);
        assert!(sha.qop_auth);
        let a = sha.answer("Mufasa", "Circle of Life", "GET", "/dir/index.html", CNONCE);
        assert_eq!(
            response(&a),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        assert!(a.contains("algorithm=SHA-256") && a.contains("qop=auth, nc=00000001"));
        assert!(a.contains("opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""));
        let md5 = Challenge::parse(RFC7616_MD5).unwrap();
        let a = md5.answer("Mufasa", "Circle of Life", "GET", "/dir/index.html", CNONCE);
        assert_eq!(response(&a), "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn rfc2617_md5_without_qop() {
        // RFC 2069 style (no qop), as many SIP trunks still send.
        let c = Challenge::parse(r#"Digest realm="asterisk",nonce="1a2b3c""#).unwrap();
        assert_eq!((c.algorithm, c.qop_auth), (Algorithm::Md5, false));
        let a = c.answer(
            "care",
            "secret",
            "INVITE",
            "sip:+8613800138000@10.0.0.1",
            "x",
        );
        let ha1 = Algorithm::Md5.hash("care:asterisk:secret");
        let ha2 = Algorithm::Md5.hash("INVITE:sip:+8613800138000@10.0.0.1");
        let want = Algorithm::Md5.hash(&format!("{ha1}:1a2b3c:{ha2}"));
        assert_eq!(response(&a), want);
        assert!(!a.contains("qop") && !a.contains("cnonce"));
    }

    #[test]
    fn the_strongest_known_challenge_wins_and_unknown_ones_are_skipped() {
        let offered = [
            r#"Digest realm="r", nonce="n1", algorithm=SHA-512-256"#,
            r#"Digest realm="r", nonce="n2", algorithm=MD5"#,
            r#"Digest realm="r", nonce="n3", algorithm=SHA-256, qop="auth""#,
        ];
        let best = Challenge::best(offered).unwrap();
        assert_eq!(
            (best.algorithm, best.nonce.as_str()),
            (Algorithm::Sha256, "n3")
        );
        assert_eq!(
            Challenge::best([offered[0], offered[1]]).unwrap().nonce,
            "n2"
        );
        for bad in [
            "",
            "Basic realm=\"r\"",
            r#"Digest nonce="n""#,
            r#"Digest realm="r", nonce="n", qop="auth-int""#,
            "Digest",
            "Digest ===,,,\"",
        ] {
            assert_eq!(Challenge::parse(bad), None, "{bad}");
        }
    }
}
