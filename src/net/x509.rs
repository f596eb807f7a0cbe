//! What the request path learns about a client certificate: its subject as an RFC 4514 string
//! and its SHA-256 fingerprint. Pure: a few DER reads over the certificate bytes, no I/O.
//!
//! Owns only the subject's formatting. It does not verify anything (rustls's verifier already
//! did, against the listener's `client_ca`) and does not parse any other field.

use std::fmt::Write as _;

/// A verified client certificate, as forwarded to backends (`x-client-cert-subject`,
/// `x-client-cert-fingerprint`) and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// RFC 4514, most specific RDN first (`CN=alice,O=Acme`). Only visible ASCII: every other
    /// byte is written `\XX`, so the value is always a valid header value.
    pub subject: Box<str>,
    /// SHA-256 of the DER certificate, 64 lower-case hex digits.
    pub fingerprint: Box<str>,
}

impl ClientCert {
    /// From the end-entity certificate's DER bytes. A subject that cannot be read (it could
    /// not be: the verifier parsed the certificate) is left empty rather than failing.
    pub fn from_der(der: &[u8]) -> ClientCert {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut fingerprint = String::with_capacity(64);
        for b in digest.as_ref() {
            let _ = write!(fingerprint, "{b:02x}");
        }
        ClientCert {
            subject: subject(der).unwrap_or_default().into(),
            fingerprint: fingerprint.into(),
        }
    }
}

/// The subject of a DER certificate as an RFC 4514 string; `None` if the DER is malformed.
pub fn subject(cert: &[u8]) -> Option<String> {
    let (tag, certificate, _) = tlv(cert)?;
    expect(tag, SEQUENCE)?;
    let (tag, mut tbs, _) = tlv(certificate)?;
    expect(tag, SEQUENCE)?;
    // [0] version (optional), serialNumber, signature, issuer, validity, subject.
    let (tag, _, rest) = tlv(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
        let (_, _, rest) = tlv(tbs)?;
        tbs = rest;
    } else {
        tbs = rest;
    }
    for _ in 0..3 {
        let (_, _, rest) = tlv(tbs)?;
        tbs = rest;
    }
    let (tag, name, _) = tlv(tbs)?;
    expect(tag, SEQUENCE)?;
    format_name(name)
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

fn expect(tag: u8, want: u8) -> Option<()> {
    (tag == want).then_some(())
}

/// One DER element: (tag, contents, what follows). Only single-byte tags and definite lengths
/// up to 4 length bytes (DER allows nothing else that a certificate uses).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | b as usize;
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// `Name ::= SEQUENCE OF RelativeDistinguishedName`, written last RDN first (RFC 4514 §2.1).
fn format_name(mut name: &[u8]) -> Option<String> {
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (tag, rdn, rest) = tlv(name)?;
        expect(tag, SET)?;
        rdns.push(rdn);
        name = rest;
    }
    let mut out = String::new();
    for (i, mut rdn) in rdns.into_iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut first = true;
        while !rdn.is_empty() {
            let (tag, atv, rest) = tlv(rdn)?;
            expect(tag, SEQUENCE)?;
            if !first {
                out.push('+');
            }
            first = false;
            attribute(atv, &mut out)?;
            rdn = rest;
        }
    }
    Some(out)
}

/// `AttributeTypeAndValue ::= SEQUENCE { type OID, value ANY }` as `TYPE=value`.
fn attribute(atv: &[u8], out: &mut String) -> Option<()> {
    let (tag, oid, rest) = tlv(atv)?;
    expect(tag, OID)?;
    let (vtag, value, _) = tlv(rest)?;
    match short_name(oid) {
        Some(name) => out.push_str(name),
        None => dotted(oid, out)?,
    }
    out.push('=');
    match decode_string(vtag, value) {
        Some(text) => escape_value(&text, out),
        None => {
            // RFC 4514 §2.4: a value of another type is `#` and the hex of its DER encoding.
            out.push('#');
            let whole = &rest[..rest.len() - tlv(rest)?.2.len()];
            for b in whole {
                let _ = write!(out, "{b:02X}");
            }
        }
    }
    Some(())
}

fn short_name(oid: &[u8]) -> Option<&'static str> {
    // 2.5.4.x: id-at, encoded 0x55 0x04 x.
    if let [0x55, 0x04, x] = oid {
        return match x {
            3 => Some("CN"),
            5 => Some("serialNumber"),
            6 => Some("C"),
            7 => Some("L"),
            8 => Some("ST"),
            9 => Some("STREET"),
            10 => Some("O"),
            11 => Some("OU"),
            _ => None,
        };
    }
    match oid {
        // 0.9.2342.19200300.100.1.25 and .1: domainComponent, userId.
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => Some("DC"),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => Some("UID"),
        // 1.2.840.113549.1.9.1: emailAddress (not in RFC 4514; OpenSSL's name).
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => Some("emailAddress"),
        _ => None,
    }
}

/// An OID's dotted-decimal form.
fn dotted(oid: &[u8], out: &mut String) -> Option<()> {
    let mut arcs = Vec::new();
    let mut acc: u64 = 0;
    for &b in oid {
        acc = acc.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(acc);
            acc = 0;
        }
    }
    let (&first, rest) = arcs.split_first()?;
    let (a, b) = match first {
        0..40 => (0, first),
        40..80 => (1, first - 40),
        _ => (2, first - 80),
    };
    let _ = write!(out, "{a}.{b}");
    for arc in rest {
        let _ = write!(out, ".{arc}");
    }
    Some(())
}

/// The text of the string types a Name uses; `None` for other types.
fn decode_string(tag: u8, v: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, NumericString, VisibleString.
        0x0c | 0x13 | 0x16 | 0x12 | 0x1a => Some(String::from_utf8_lossy(v).into_owned()),
        // TeletexString: in practice Latin-1.
        0x14 => Some(v.iter().map(|&b| b as char).collect()),
        // BMPString: UCS-2 big-endian.
        0x1e => Some(
            char::decode_utf16(
                v.chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])),
            )
            .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
        ),
        // UniversalString: UCS-4 big-endian.
        0x1c => Some(
            v.chunks(4)
                .map(|c| {
                    let mut b = [0u8; 4];
                    b[..c.len()].copy_from_slice(c);
                    char::from_u32(u32::from_be_bytes(b)).unwrap_or(char::REPLACEMENT_CHARACTER)
                })
                .collect(),
        ),
        _ => None,
    }
}

/// RFC 4514 §2.4 escaping, and every byte that is not visible ASCII as `\XX` (UTF-8 bytes), so
/// that the result can be an HTTP header value.
fn escape_value(v: &str, out: &mut String) {
    let bytes = v.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let special = matches!(b, b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' | b'=')
            || (i == 0 && (b == b'#' || b == b' '))
            || (i + 1 == bytes.len() && b == b' ');
        if special {
            out.push('\\');
            out.push(b as char);
        } else if !b.is_ascii_graphic() && b != b' ' {
            let _ = write!(out, "\\{b:02X}");
        } else {
            out.push(b as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cert_with(dn: rcgen::DistinguishedName) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["client".to_string()]).unwrap();
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn subject_is_rfc4514_most_specific_first() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "DE");
        dn.push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        dn.push(rcgen::DnType::CommonName, "alice");
        let der = cert_with(dn);
        assert_eq!(subject(&der).unwrap(), r"CN=alice,O=Acme\, Inc.,C=DE");
        let c = ClientCert::from_der(&der);
        assert_eq!(c.fingerprint.len(), 64);
        assert!(
            c.fingerprint
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn values_that_could_break_a_header_are_escaped() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, " evil\r\nx-admin: 1 é");
        let s = subject(&cert_with(dn)).unwrap();
        assert_eq!(s, r"CN=\ evil\0D\0Ax-admin: 1 \C3\A9");
        assert!(s.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
    }

    #[test]
    fn unknown_attributes_are_dotted_with_hex_values() {
        // SET { SEQ { OID 1.2.3.4, INTEGER 5 } }
        let name = [
            0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x2a, 0x03, 0x04, 0x02, 0x01, 0x05,
        ];
        assert_eq!(format_name(&name).unwrap(), "1.2.3.4=#020105");
    }

    #[test]
    fn long_form_lengths_and_truncation() {
        assert_eq!(
            tlv(&[0x04, 0x81, 0x01, 0xaa]),
            Some((0x04, &[0xaa][..], &[][..]))
        );
        assert_eq!(tlv(&[0x04, 0x82, 0x00]), None);
        assert_eq!(tlv(&[0x04, 0x05, 0x00]), None);
        assert_eq!(tlv(&[0x1f, 0x00]), None);
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = subject(&b);
            let _ = format_name(&b);
        }
    }
}
