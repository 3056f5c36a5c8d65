//! The Telnet protocol for a client, sans-IO: bytes from the device in,
//! the device's data and our protocol replies out; our data in, encoded
//! bytes out.
//!
//! Option negotiation (RFC 854/855: answering DO/DONT/WILL/WONT without
//! loops, tracking each option's state) is `libtelnet-rs`'s
//! [`Parser`] with its compatibility table. We accept:
//! the device echoing and suppressing go-ahead (RFC 857, RFC 858), and on
//! our side suppress-go-ahead, our window size (NAWS, RFC 1073; wide, so
//! devices do not wrap) and terminal type (RFC 1091, `VT100`). Everything
//! else is refused by the parser. This module frames the byte stream
//! before the parser sees it: data bytes go straight out (an escaped
//! `IAC IAC` is one 255 data byte), and only complete command sequences
//! reach the parser, so a sequence split across reads is kept until its end
//! arrives (the parser would take a split sequence for data).
//!
//! **Invariant:** a subnegotiation longer than [`MAX_SUBNEGOTIATION`]
//! bytes is dropped, not buffered: a device cannot make us hold more.

use libtelnet_rs::Parser;
use libtelnet_rs::compatibility::CompatibilityTable;
use libtelnet_rs::events::TelnetEvents;
use libtelnet_rs::telnet::{op_command as cmd, op_option as opt};

/// The longest subnegotiation kept (bytes, `IAC SB` to `IAC SE`).
pub const MAX_SUBNEGOTIATION: usize = 1024;

/// The terminal type we announce (RFC 1091 `IS`).
const TERMINAL_TYPE: &[u8] = b"VT100";

/// What one read from the device yields.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// The device's data (the terminal's output).
    pub data: Vec<u8>,
    /// Protocol replies to write to the device, in order.
    pub reply: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Data,
    /// After `IAC`.
    Iac,
    /// After `IAC WILL|WONT|DO|DONT`.
    Negotiation,
    /// Inside `IAC SB ...`.
    Sub,
    /// After an `IAC` inside a subnegotiation.
    SubIac,
}

/// A Telnet client's protocol state (see the module docs).
pub struct TelnetProtocol {
    parser: Parser,
    frame: Frame,
    /// The command sequence being framed.
    sequence: Vec<u8>,
    /// The window size to report once NAWS is agreed (columns, rows).
    window: (u16, u16),
}

impl std::fmt::Debug for TelnetProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelnetProtocol")
            .field("frame", &self.frame)
            .field("window", &self.window)
            .finish()
    }
}

impl TelnetProtocol {
    /// A client that reports a `cols` × `rows` window.
    pub fn new(cols: u16, rows: u16) -> Self {
        let mut table = CompatibilityTable::new();
        table.support_remote(opt::ECHO);
        table.support(opt::SGA);
        table.support_local(opt::NAWS);
        table.support_local(opt::TTYPE);
        Self {
            parser: Parser::with_support(table),
            frame: Frame::Data,
            sequence: Vec::new(),
            window: (cols, rows),
        }
    }

    /// The server side, for the simulator's Telnet listener: we echo and
    /// suppress go-ahead (so the client neither echoes nor waits for GA),
    /// and accept the client's window size and suppress-go-ahead. Returns
    /// the protocol and the offers to send first.
    pub fn server() -> (Self, Vec<u8>) {
        let mut table = CompatibilityTable::new();
        table.support_local(opt::ECHO);
        table.support(opt::SGA);
        table.support_remote(opt::NAWS);
        let mut parser = Parser::with_support(table);
        let mut opening = Vec::new();
        for option in [opt::ECHO, opt::SGA] {
            if let Some(TelnetEvents::DataSend(bytes)) = parser._will(option) {
                opening.extend_from_slice(&bytes);
            }
        }
        let protocol = Self {
            parser,
            frame: Frame::Data,
            sequence: Vec::new(),
            window: (0, 0),
        };
        (protocol, opening)
    }

    /// Takes bytes from the peer.
    pub fn receive(&mut self, bytes: &[u8]) -> Received {
        let mut out = Received::default();
        for &b in bytes {
            match self.frame {
                Frame::Data if b == cmd::IAC => {
                    self.sequence.clear();
                    self.sequence.push(b);
                    self.frame = Frame::Iac;
                }
                Frame::Data => out.data.push(b),
                Frame::Iac => {
                    self.sequence.push(b);
                    self.frame = match b {
                        cmd::IAC => {
                            out.data.push(cmd::IAC);
                            Frame::Data
                        }
                        cmd::WILL | cmd::WONT | cmd::DO | cmd::DONT => Frame::Negotiation,
                        cmd::SB => Frame::Sub,
                        // A two-byte command (GA, NOP, ...): nothing to do.
                        _ => Frame::Data,
                    };
                }
                Frame::Negotiation => {
                    self.sequence.push(b);
                    self.complete(&mut out);
                }
                Frame::Sub | Frame::SubIac => {
                    if self.sequence.len() < MAX_SUBNEGOTIATION {
                        self.sequence.push(b);
                    }
                    self.frame = match (self.frame, b) {
                        (Frame::Sub, cmd::IAC) => Frame::SubIac,
                        (Frame::SubIac, cmd::SE) => {
                            if self.sequence.len() < MAX_SUBNEGOTIATION {
                                self.complete(&mut out);
                            }
                            Frame::Data
                        }
                        _ => Frame::Sub,
                    };
                }
            }
        }
        out
    }

    /// A complete command sequence goes to the parser; its replies out.
    fn complete(&mut self, out: &mut Received) {
        let sequence = std::mem::take(&mut self.sequence);
        self.frame = Frame::Data;
        for event in self.parser.receive(&sequence) {
            match event {
                TelnetEvents::DataSend(bytes) => out.reply.extend_from_slice(&bytes),
                TelnetEvents::Negotiation(n) if n.command == cmd::DO && n.option == opt::NAWS => {
                    let (cols, rows) = self.window;
                    out.reply.extend(self.naws(cols, rows));
                }
                TelnetEvents::Subnegotiation(sub)
                    if sub.option == opt::TTYPE && sub.buffer.first() == Some(&cmd::SEND) =>
                {
                    let mut is = vec![cmd::IS];
                    is.extend_from_slice(TERMINAL_TYPE);
                    if let Some(TelnetEvents::DataSend(bytes)) =
                        self.parser.subnegotiation(opt::TTYPE, is)
                    {
                        out.reply.extend_from_slice(&bytes);
                    }
                }
                _ => {}
            }
        }
    }

    /// Our window size changed: the NAWS report to send (empty when the
    /// device did not ask for it).
    pub fn resize(&mut self, cols: u16, rows: u16) -> Vec<u8> {
        self.window = (cols, rows);
        self.naws(cols, rows)
    }

    fn naws(&mut self, cols: u16, rows: u16) -> Vec<u8> {
        let mut size = Vec::with_capacity(4);
        size.extend_from_slice(&cols.to_be_bytes());
        size.extend_from_slice(&rows.to_be_bytes());
        match self.parser.subnegotiation(opt::NAWS, size) {
            Some(TelnetEvents::DataSend(bytes)) => bytes.to_vec(),
            _ => Vec::new(),
        }
    }

    /// Our data as it goes on the wire: 255 doubled, a carriage return not
    /// followed by a line feed sent as `CR NUL` (RFC 854's end-of-line
    /// rules).
    pub fn encode(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 2);
        for (i, &b) in data.iter().enumerate() {
            out.push(b);
            match b {
                cmd::IAC => out.push(cmd::IAC),
                b'\r' if data.get(i + 1) != Some(&b'\n') => out.push(0),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IAC: u8 = 255;

    /// What inetutils telnetd opens with, answered as we intend.
    #[test]
    fn negotiation_with_a_real_telnetd_opening() {
        let mut p = TelnetProtocol::new(511, 24);
        let got = p.receive(b"\xff\xfb%\xff\xfb&\xff\xfd\x18\xff\xfd \xff\xfd#\xff\xfd'\xff\xfd$");
        assert!(got.data.is_empty());
        // DONT auth, DONT encrypt, WILL ttype, WONT tspeed/xdisploc/env...
        assert_eq!(
            got.reply,
            b"\xff\xfe%\xff\xfe&\xff\xfb\x18\xff\xfc \xff\xfc#\xff\xfc'\xff\xfc$"
        );
        // The terminal type asked for; NAWS agreed and reported at once.
        let got = p.receive(b"\xff\xfa\x18\x01\xff\xf0\xff\xfd\x1f\xff\xfb\x01\xff\xfb\x03");
        assert_eq!(
            got.reply,
            b"\xff\xfa\x18\x00VT100\xff\xf0\xff\xfb\x1f\xff\xfa\x1f\x01\xff\xff\x00\x18\xff\xf0\xff\xfd\x01\xff\xfd\x03"
        );
        // Asked again: no loop.
        assert!(p.receive(b"\xff\xfb\x01").reply.is_empty());
        assert_eq!(p.resize(80, 25), b"\xff\xfa\x1f\x00\x50\x00\x19\xff\xf0");
    }

    #[test]
    fn sequences_split_across_reads_and_escaped_iac() {
        let mut p = TelnetProtocol::new(80, 24);
        let got = p.receive(b"login\xff");
        assert_eq!(got.data, b"login");
        let got = p.receive(b"\xfd");
        assert!(got.data.is_empty() && got.reply.is_empty());
        let got = p.receive(b"\x05: \xff\xff!");
        assert_eq!(got.data, [b':', b' ', IAC, b'!']);
        assert_eq!(got.reply, b"\xff\xfc\x05", "DO STATUS refused");
        // A go-ahead between data bytes is not data.
        assert_eq!(p.receive(b"a\xff\xf9b").data, b"ab");
    }

    #[test]
    fn an_endless_subnegotiation_is_dropped() {
        let mut p = TelnetProtocol::new(80, 24);
        let mut flood = vec![IAC, cmd::SB, opt::TTYPE];
        flood.extend(std::iter::repeat_n(b'x', 100_000));
        let got = p.receive(&flood);
        assert!(got.data.is_empty() && got.reply.is_empty());
        assert!(p.sequence.len() <= MAX_SUBNEGOTIATION);
        let got = p.receive(b"\xff\xf0after");
        assert_eq!(got.data, b"after");
        assert!(got.reply.is_empty());
    }

    #[test]
    fn client_and_server_agree_without_loops() {
        let mut client = TelnetProtocol::new(80, 24);
        let (mut server, opening) = TelnetProtocol::server();
        assert_eq!(opening, b"\xff\xfb\x01\xff\xfb\x03", "WILL ECHO, WILL SGA");
        let mut to_server = client.receive(&opening).reply;
        assert_eq!(to_server, b"\xff\xfd\x01\xff\xfd\x03", "DO ECHO, DO SGA");
        // Already agreed: the server says nothing more.
        let got = server.receive(&to_server);
        assert!(got.reply.is_empty() && got.data.is_empty(), "{got:?}");
        to_server = b"show\r\n".to_vec();
        assert_eq!(server.receive(&to_server).data, b"show\r\n");
    }

    #[test]
    fn encoding_doubles_iac_and_pads_a_bare_cr() {
        assert_eq!(TelnetProtocol::encode(b"a\xffb"), b"a\xff\xffb");
        assert_eq!(TelnetProtocol::encode(b"ls\r"), b"ls\r\0");
        assert_eq!(TelnetProtocol::encode(b"ls\r\n"), b"ls\r\n");
    }
}
