//! [`Greeting`]: what a server says between `AuthenticationOk` and its first `ReadyForQuery`, as a relay
//! passes it on: each `ParameterStatus` and `NoticeResponse` as received, and the parameters' values.

use bytes::BytesMut;

/// The server's `ParameterStatus` and `NoticeResponse` messages, raw and in order, and the parameters
/// they report. A parameter reported again (by [`RawSession::apply_parameters`](super::RawSession)) takes
/// its first report's place, so a client is told each parameter once, with its value now.
#[derive(Debug, Default)]
pub(super) struct Greeting {
    /// Each message, with the parameter it reports (`None`: a notice).
    messages: Vec<(Option<String>, BytesMut)>,
    /// The messages, one after the other, as a relay sends them.
    bytes: BytesMut,
    parameters: Vec<(String, String)>,
}

impl Greeting {
    /// A `ParameterStatus` message (`raw`) reporting `name` = `value`.
    pub(super) fn parameter(&mut self, name: String, value: String, raw: BytesMut) {
        match self.parameters.iter().position(|(k, _)| *k == name) {
            Some(i) => self.parameters[i].1 = value,
            None => self.parameters.push((name.clone(), value)),
        }
        match self
            .messages
            .iter_mut()
            .find(|(reported, _)| reported.as_deref() == Some(name.as_str()))
        {
            Some((_, old)) => *old = raw,
            None => self.messages.push((Some(name), raw)),
        }
        self.rebuild();
    }

    /// A `NoticeResponse` message, as received.
    pub(super) fn notice(&mut self, raw: BytesMut) {
        self.messages.push((None, raw));
        self.rebuild();
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(super) fn parameters(&self) -> &[(String, String)] {
        &self.parameters
    }

    fn rebuild(&mut self) {
        self.bytes.clear();
        for (_, raw) in &self.messages {
            self.bytes.extend_from_slice(raw);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> BytesMut {
        BytesMut::from(text.as_bytes())
    }

    #[test]
    fn a_parameter_reported_again_keeps_its_place_with_its_new_value() {
        let mut greeting = Greeting::default();
        greeting.parameter("TimeZone".into(), "UTC".into(), raw("[tz utc]"));
        greeting.notice(raw("[notice]"));
        greeting.parameter("DateStyle".into(), "ISO, MDY".into(), raw("[ds iso]"));
        greeting.parameter("TimeZone".into(), "Europe/Paris".into(), raw("[tz paris]"));
        assert_eq!(greeting.bytes(), b"[tz paris][notice][ds iso]");
        assert_eq!(
            greeting.parameters(),
            [
                ("TimeZone".to_string(), "Europe/Paris".to_string()),
                ("DateStyle".to_string(), "ISO, MDY".to_string())
            ]
        );
    }
}
