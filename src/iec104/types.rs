//! The type identifications this codec supports, and the size of each one's information
//! element (everything after the IOA).

use std::fmt;

use super::time::CP56_LEN;

/// A supported type identification. Variants are named after the standard's mnemonics
/// (`M_SP_NA_1` is `MSpNa1`), which is what engineers and tools such as Wireshark show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TypeId {
    /// Single-point information.
    MSpNa1 = 1,
    /// Double-point information.
    MDpNa1 = 3,
    /// Step position information.
    MStNa1 = 5,
    /// Bitstring of 32 bits.
    MBoNa1 = 7,
    /// Measured value, normalized.
    MMeNa1 = 9,
    /// Measured value, scaled.
    MMeNb1 = 11,
    /// Measured value, short floating point.
    MMeNc1 = 13,
    /// Integrated totals.
    MItNa1 = 15,
    /// Single-point information with CP56Time2a.
    MSpTb1 = 30,
    /// Double-point information with CP56Time2a.
    MDpTb1 = 31,
    /// Step position information with CP56Time2a.
    MStTb1 = 32,
    /// Bitstring of 32 bits with CP56Time2a.
    MBoTb1 = 33,
    /// Measured value, normalized, with CP56Time2a.
    MMeTd1 = 34,
    /// Measured value, scaled, with CP56Time2a.
    MMeTe1 = 35,
    /// Measured value, short floating point, with CP56Time2a.
    MMeTf1 = 36,
    /// Integrated totals with CP56Time2a.
    MItTb1 = 37,
    /// Single command.
    CScNa1 = 45,
    /// Double command.
    CDcNa1 = 46,
    /// Regulating step command.
    CRcNa1 = 47,
    /// Set point command, normalized.
    CSeNa1 = 48,
    /// Set point command, scaled.
    CSeNb1 = 49,
    /// Set point command, short floating point.
    CSeNc1 = 50,
    /// Single command with CP56Time2a.
    CScTa1 = 58,
    /// Double command with CP56Time2a.
    CDcTa1 = 59,
    /// Regulating step command with CP56Time2a.
    CRcTa1 = 60,
    /// Set point command, normalized, with CP56Time2a.
    CSeTa1 = 61,
    /// Set point command, scaled, with CP56Time2a.
    CSeTb1 = 62,
    /// Set point command, short floating point, with CP56Time2a.
    CSeTc1 = 63,
    /// End of initialization.
    MEiNa1 = 70,
    /// (General) interrogation command.
    CIcNa1 = 100,
    /// Counter interrogation command.
    CCiNa1 = 101,
    /// Clock synchronization command.
    CCsNa1 = 103,
}

impl TypeId {
    /// Every supported type, in code order.
    pub const ALL: [TypeId; 32] = [
        Self::MSpNa1,
        Self::MDpNa1,
        Self::MStNa1,
        Self::MBoNa1,
        Self::MMeNa1,
        Self::MMeNb1,
        Self::MMeNc1,
        Self::MItNa1,
        Self::MSpTb1,
        Self::MDpTb1,
        Self::MStTb1,
        Self::MBoTb1,
        Self::MMeTd1,
        Self::MMeTe1,
        Self::MMeTf1,
        Self::MItTb1,
        Self::CScNa1,
        Self::CDcNa1,
        Self::CRcNa1,
        Self::CSeNa1,
        Self::CSeNb1,
        Self::CSeNc1,
        Self::CScTa1,
        Self::CDcTa1,
        Self::CRcTa1,
        Self::CSeTa1,
        Self::CSeTb1,
        Self::CSeTc1,
        Self::MEiNa1,
        Self::CIcNa1,
        Self::CCiNa1,
        Self::CCsNa1,
    ];

    pub fn from_code(code: u8) -> Option<TypeId> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// The type whose standard mnemonic is `name`, in any case: `"M_SP_TB_1"` and
    /// `"m_sp_tb_1"` are both [`TypeId::MSpTb1`].
    pub fn from_mnemonic(name: &str) -> Option<TypeId> {
        Self::ALL
            .into_iter()
            .find(|t| t.mnemonic().eq_ignore_ascii_case(name))
    }

    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Whether the element ends in a CP56Time2a tag.
    pub const fn has_time(self) -> bool {
        matches!(self.code(), 30..=37 | 58..=63 | 103)
    }

    /// The octets of one information element, without its IOA.
    pub const fn element_len(self) -> usize {
        let value = match self {
            Self::MSpNa1 | Self::MSpTb1 | Self::MDpNa1 | Self::MDpTb1 => 1,
            Self::MStNa1 | Self::MStTb1 => 2,
            Self::MBoNa1 | Self::MBoTb1 => 5,
            Self::MMeNa1 | Self::MMeTd1 | Self::MMeNb1 | Self::MMeTe1 => 3,
            Self::MMeNc1 | Self::MMeTf1 | Self::MItNa1 | Self::MItTb1 => 5,
            Self::CScNa1 | Self::CScTa1 | Self::CDcNa1 | Self::CDcTa1 => 1,
            Self::CRcNa1 | Self::CRcTa1 => 1,
            Self::CSeNa1 | Self::CSeTa1 | Self::CSeNb1 | Self::CSeTb1 => 3,
            Self::CSeNc1 | Self::CSeTc1 => 5,
            Self::MEiNa1 | Self::CIcNa1 | Self::CCiNa1 => 1,
            Self::CCsNa1 => 0,
        };
        if self.has_time() {
            value + CP56_LEN
        } else {
            value
        }
    }

    /// The standard's mnemonic, e.g. `"M_SP_NA_1"`.
    pub const fn mnemonic(self) -> &'static str {
        match self {
            Self::MSpNa1 => "M_SP_NA_1",
            Self::MDpNa1 => "M_DP_NA_1",
            Self::MStNa1 => "M_ST_NA_1",
            Self::MBoNa1 => "M_BO_NA_1",
            Self::MMeNa1 => "M_ME_NA_1",
            Self::MMeNb1 => "M_ME_NB_1",
            Self::MMeNc1 => "M_ME_NC_1",
            Self::MItNa1 => "M_IT_NA_1",
            Self::MSpTb1 => "M_SP_TB_1",
            Self::MDpTb1 => "M_DP_TB_1",
            Self::MStTb1 => "M_ST_TB_1",
            Self::MBoTb1 => "M_BO_TB_1",
            Self::MMeTd1 => "M_ME_TD_1",
            Self::MMeTe1 => "M_ME_TE_1",
            Self::MMeTf1 => "M_ME_TF_1",
            Self::MItTb1 => "M_IT_TB_1",
            Self::CScNa1 => "C_SC_NA_1",
            Self::CDcNa1 => "C_DC_NA_1",
            Self::CRcNa1 => "C_RC_NA_1",
            Self::CSeNa1 => "C_SE_NA_1",
            Self::CSeNb1 => "C_SE_NB_1",
            Self::CSeNc1 => "C_SE_NC_1",
            Self::CScTa1 => "C_SC_TA_1",
            Self::CDcTa1 => "C_DC_TA_1",
            Self::CRcTa1 => "C_RC_TA_1",
            Self::CSeTa1 => "C_SE_TA_1",
            Self::CSeTb1 => "C_SE_TB_1",
            Self::CSeTc1 => "C_SE_TC_1",
            Self::MEiNa1 => "M_EI_NA_1",
            Self::CIcNa1 => "C_IC_NA_1",
            Self::CCiNa1 => "C_CI_NA_1",
            Self::CCsNa1 => "C_CS_NA_1",
        }
    }
}

impl fmt::Display for TypeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.mnemonic(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_none() {
        for t in TypeId::ALL {
            assert_eq!(TypeId::from_code(t.code()), Some(t));
        }
        let known = (0..=u8::MAX)
            .filter(|c| TypeId::from_code(*c).is_some())
            .count();
        assert_eq!(known, TypeId::ALL.len());
        assert!(
            TypeId::ALL.windows(2).all(|w| w[0].code() < w[1].code()),
            "ALL is in code order"
        );
    }

    #[test]
    fn mnemonics_round_trip_in_any_case_and_junk_is_none() {
        for t in TypeId::ALL {
            let name = t.mnemonic();
            assert_eq!(TypeId::from_mnemonic(name), Some(t), "{name}");
            assert_eq!(
                TypeId::from_mnemonic(&name.to_ascii_lowercase()),
                Some(t),
                "{name}"
            );
        }
        assert_eq!(TypeId::from_mnemonic("m_sp_tb_1"), Some(TypeId::MSpTb1));
        assert_eq!(TypeId::from_mnemonic("M_St_Tb_1"), Some(TypeId::MStTb1));
        for junk in [
            "",
            "M_SP_TB",
            "M_SP_TB_2",
            " M_SP_TB_1",
            "M_SP_TB_1 ",
            "MSpTb1",
            "M-SP-TB-1",
            "30",
            "M_XX_NA_1",
            "M_SP_TB_1\0",
            "Ｍ_SP_TB_1",
        ] {
            assert_eq!(TypeId::from_mnemonic(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn element_lengths() {
        assert_eq!(TypeId::MSpNa1.element_len(), 1);
        assert_eq!(TypeId::MStNa1.element_len(), 2);
        assert_eq!(TypeId::MStTb1.element_len(), 9);
        assert_eq!(TypeId::MBoNa1.element_len(), 5);
        assert_eq!(TypeId::MBoTb1.element_len(), 12);
        assert_eq!(TypeId::MSpTb1.element_len(), 8);
        assert_eq!(TypeId::MMeTf1.element_len(), 12);
        assert_eq!(TypeId::MItTb1.element_len(), 12);
        assert_eq!(TypeId::CSeTc1.element_len(), 12);
        assert_eq!(TypeId::CCsNa1.element_len(), 7);
    }
}
