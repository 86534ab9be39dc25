//! Which Modbus reads cover one RTU's monitored points, and the image of one poll round that
//! the answers make up.

use crate::site::{Format, Point, PointKind, Table};

/// The most one request may read, from the Modbus application protocol spec (what fits in
/// one 253-byte PDU).
const MAX_BITS: u32 = 2000;
const MAX_REGISTERS: u32 = 125;

/// Unused addresses a read may span to join two ranges: reading a few more values costs less
/// than another round trip.
const GAP_BITS: u32 = 32;
const GAP_REGISTERS: u32 = 8;

/// One past the last Modbus address.
const ADDRESS_END: u32 = 0x1_0000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Read {
    pub table: Table,
    pub start: u16,
    pub count: u16,
}

impl Read {
    /// Where `addr` lies in the read, if the `n` values from it all do.
    fn index(&self, table: Table, addr: u16, n: u16) -> Option<usize> {
        let i = u32::from(addr).checked_sub(u32::from(self.start))?;
        let fits = self.table == table && i + u32::from(n) <= u32::from(self.count);
        fits.then_some(i as usize)
    }
}

/// The addresses one point needs, `end` exclusive.
#[derive(Debug, Clone, Copy)]
struct Span {
    table: Table,
    start: u16,
    end: u32,
}

/// The reads that cover every monitored point, as few as the gap and size rules allow,
/// ordered by table then start. A point's addresses always lie inside one read, so that a
/// 32-bit value or the two bits of a double indication come from the same answer.
pub(crate) fn plan(points: &[&Point]) -> Vec<Read> {
    let mut spans: Vec<Span> = points
        .iter()
        .filter(|p| !p.kind.get_ref().is_command())
        .map(|p| span(p))
        .collect();
    spans.sort_by_key(|s| (rank(s.table), s.start, s.end));

    let mut reads = Vec::new();
    let mut current: Option<Span> = None;
    for next in spans {
        match &mut current {
            Some(c) if joins(c, &next) => c.end = c.end.max(next.end),
            _ => reads.extend(current.replace(next).map(to_read)),
        }
    }
    reads.extend(current.map(to_read));
    reads
}

fn span(point: &Point) -> Span {
    let table = point.modbus_table();
    let width = if table.is_bits() {
        if *point.kind.get_ref() == PointKind::Double {
            2
        } else {
            1
        }
    } else {
        point
            .format
            .as_ref()
            .map_or(Format::U16, |f| *f.get_ref())
            .registers()
    };
    // The validator refuses a point that runs past the last address; should one get here, it
    // is read as far as it goes and decoding reports the rest missing.
    let end = (u32::from(point.modbus_address()) + u32::from(width)).min(ADDRESS_END);
    Span {
        table,
        start: point.modbus_address(),
        end,
    }
}

fn joins(current: &Span, next: &Span) -> bool {
    let (gap, limit) = if current.table.is_bits() {
        (GAP_BITS, MAX_BITS)
    } else {
        (GAP_REGISTERS, MAX_REGISTERS)
    };
    current.table == next.table
        && u32::from(next.start) <= current.end + gap
        && current.end.max(next.end) - u32::from(current.start) <= limit
}

fn to_read(span: Span) -> Read {
    Read {
        table: span.table,
        start: span.start,
        // At most the read limit, so it fits.
        count: (span.end - u32::from(span.start)) as u16,
    }
}

fn rank(table: Table) -> u8 {
    match table {
        Table::Coil => 0,
        Table::DiscreteInput => 1,
        Table::Holding => 2,
        Table::Input => 3,
    }
}

/// What a device answered to one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Data {
    Bits(Vec<bool>),
    Registers(Vec<u16>),
}

/// The answers of one poll round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Image {
    answers: Vec<(Read, Data)>,
}

impl Image {
    /// Records the answer to `read`, replacing an earlier answer to the same read.
    pub(crate) fn insert(&mut self, read: Read, data: Data) {
        match self.answers.iter_mut().find(|(r, _)| *r == read) {
            Some(answer) => answer.1 = data,
            None => self.answers.push((read, data)),
        }
    }

    /// Values past what was asked (bit answers come padded to whole bytes) and values the
    /// device did not send are both treated as absent.
    pub(crate) fn bit(&self, table: Table, addr: u16) -> Option<bool> {
        self.answers.iter().find_map(|(read, data)| match data {
            Data::Bits(bits) => bits.get(read.index(table, addr, 1)?).copied(),
            Data::Registers(_) => None,
        })
    }

    /// The `n` registers from `addr`, only if one answer holds them all: registers from two
    /// answers could tear a value the device changed in between.
    pub(crate) fn registers(&self, table: Table, addr: u16, n: u16) -> Option<Vec<u16>> {
        self.answers.iter().find_map(|(read, data)| match data {
            Data::Registers(words) => {
                let i = read.index(table, addr, n)?;
                words.get(i..i + usize::from(n)).map(<[u16]>::to_vec)
            }
            Data::Bits(_) => None,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use toml::Spanned;

    use super::*;
    use crate::site::WordOrder;

    pub(crate) fn point(
        kind: PointKind,
        table: Table,
        address: u16,
        format: Option<Format>,
    ) -> Point {
        Point {
            id: Spanned::new(0..0, format!("p{address}")),
            rtu: Spanned::new(0..0, "rtu".into()),
            kind: Spanned::new(0..0, kind),
            table: Some(Spanned::new(0..0, table)),
            address: Some(Spanned::new(0..0, address)),
            type_id: None,
            ioa: None,
            common_address: None,
            format: format.map(|f| Spanned::new(0..0, f)),
            word_order: WordOrder::Big,
            scale: 1.0,
            offset: 0.0,
            deadband: None,
            description: None,
        }
    }

    fn read(table: Table, start: u16, count: u16) -> Read {
        Read {
            table,
            start,
            count,
        }
    }

    fn planned(points: &[Point]) -> Vec<Read> {
        plan(&points.iter().collect::<Vec<_>>())
    }

    fn registers(table: Table, addresses: &[u16]) -> Vec<Point> {
        let kind = PointKind::Measured;
        addresses
            .iter()
            .map(|&a| point(kind, table, a, None))
            .collect()
    }

    #[test]
    fn merges_by_table_in_table_order_and_skips_commands() {
        let points = vec![
            point(PointKind::Measured, Table::Input, 5, None),
            point(PointKind::Measured, Table::Holding, 3, Some(Format::F32)),
            point(PointKind::Single, Table::DiscreteInput, 7, None),
            point(PointKind::Measured, Table::Holding, 0, None),
            point(PointKind::Single, Table::Coil, 1, None),
            point(PointKind::SingleCommand, Table::Coil, 200, None),
            point(PointKind::Setpoint, Table::Holding, 300, None),
            point(PointKind::Single, Table::DiscreteInput, 2, None),
        ];
        assert_eq!(
            planned(&points),
            vec![
                read(Table::Coil, 1, 1),
                read(Table::DiscreteInput, 2, 6),
                read(Table::Holding, 0, 5),
                read(Table::Input, 5, 1),
            ]
        );
        assert!(plan(&[]).is_empty());
    }

    #[test]
    fn joins_across_a_gap_of_up_to_8_registers_or_32_bits() {
        assert_eq!(
            planned(&registers(Table::Input, &[0, 9])),
            vec![read(Table::Input, 0, 10)]
        );
        assert_eq!(
            planned(&registers(Table::Input, &[0, 10])),
            vec![read(Table::Input, 0, 1), read(Table::Input, 10, 1)]
        );
        let bits = |addresses: &[u16]| -> Vec<Point> {
            let kind = PointKind::Single;
            addresses
                .iter()
                .map(|&a| point(kind, Table::Coil, a, None))
                .collect()
        };
        assert_eq!(planned(&bits(&[0, 33])), vec![read(Table::Coil, 0, 34)]);
        assert_eq!(
            planned(&bits(&[0, 34])),
            vec![read(Table::Coil, 0, 1), read(Table::Coil, 34, 1)]
        );
    }

    #[test]
    fn no_read_exceeds_the_modbus_limits() {
        let addresses: Vec<u16> = (0..300).collect();
        assert_eq!(
            planned(&registers(Table::Holding, &addresses)),
            vec![
                read(Table::Holding, 0, 125),
                read(Table::Holding, 125, 125),
                read(Table::Holding, 250, 50),
            ]
        );
        let bits: Vec<Point> = (0..4500)
            .map(|a| point(PointKind::Single, Table::DiscreteInput, a, None))
            .collect();
        assert_eq!(
            planned(&bits),
            vec![
                read(Table::DiscreteInput, 0, 2000),
                read(Table::DiscreteInput, 2000, 2000),
                read(Table::DiscreteInput, 4000, 500),
            ]
        );
    }

    #[test]
    fn a_double_indication_spans_two_bits_in_one_read() {
        let alone = [point(PointKind::Double, Table::DiscreteInput, 10, None)];
        assert_eq!(planned(&alone), vec![read(Table::DiscreteInput, 10, 2)]);
        let mut points: Vec<Point> = (0..1999)
            .map(|a| point(PointKind::Single, Table::DiscreteInput, a, None))
            .collect();
        points.push(point(PointKind::Double, Table::DiscreteInput, 1999, None));
        assert_eq!(
            planned(&points),
            vec![
                read(Table::DiscreteInput, 0, 1999),
                read(Table::DiscreteInput, 1999, 2),
            ]
        );
    }

    #[test]
    fn a_32_bit_value_is_never_split_across_reads() {
        let mut points = registers(Table::Input, &(0..124).collect::<Vec<_>>());
        points.push(point(
            PointKind::Measured,
            Table::Input,
            124,
            Some(Format::U32),
        ));
        assert_eq!(
            planned(&points),
            vec![read(Table::Input, 0, 124), read(Table::Input, 124, 2)]
        );
    }

    #[test]
    fn the_last_address_does_not_overflow() {
        let points = vec![
            point(PointKind::Double, Table::Coil, 65534, None),
            point(PointKind::Measured, Table::Holding, 65530, None),
            point(PointKind::Measured, Table::Holding, 65535, None),
            // Refused by the validator; read as far as it goes.
            point(PointKind::Measured, Table::Input, 65535, Some(Format::U32)),
        ];
        assert_eq!(
            planned(&points),
            vec![
                read(Table::Coil, 65534, 2),
                read(Table::Holding, 65530, 6),
                read(Table::Input, 65535, 1),
            ]
        );
        let mut image = Image::default();
        image.insert(read(Table::Input, 65535, 1), Data::Registers(vec![7]));
        assert_eq!(image.registers(Table::Input, 65535, 1), Some(vec![7]));
        assert_eq!(image.registers(Table::Input, 65535, 2), None);
    }

    #[test]
    fn the_image_answers_only_what_was_asked_and_received() {
        let mut image = Image::default();
        image.insert(
            read(Table::Coil, 10, 3),
            Data::Bits(vec![true, false, true, true]),
        );
        image.insert(read(Table::Holding, 100, 4), Data::Registers(vec![1, 2, 3]));
        assert_eq!(image.bit(Table::Coil, 12), Some(true));
        assert_eq!(image.bit(Table::Coil, 13), None, "padding past the count");
        assert_eq!(image.bit(Table::Coil, 9), None);
        assert_eq!(image.bit(Table::DiscreteInput, 10), None);
        assert_eq!(image.registers(Table::Holding, 101, 2), Some(vec![2, 3]));
        assert_eq!(
            image.registers(Table::Holding, 102, 2),
            None,
            "short answer"
        );
        assert_eq!(image.registers(Table::Input, 100, 1), None);
        assert_eq!(image.bit(Table::Holding, 100), None);
        image.insert(
            read(Table::Holding, 100, 4),
            Data::Registers(vec![5, 6, 7, 8]),
        );
        assert_eq!(image.registers(Table::Holding, 102, 2), Some(vec![7, 8]));
    }
}
