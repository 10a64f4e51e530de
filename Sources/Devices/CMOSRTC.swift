import FoundationEssentials
import Synchronization

/// The PC's CMOS real-time clock (Motorola MC146818A) at ports 0x70 (index,
/// bit 7 = NMI mask) and 0x71 (data). Linux reads the wall clock here at boot
/// (`mc146818_get_time`) and `rtc_cmos` probes it; without it every read is
/// 0xFF, "update in progress" never clears, and the guest loses seconds
/// waiting. Time registers come from the host clock (UTC) in BCD, 24-hour
/// mode; the guest's writes to them are ignored, other CMOS bytes are plain
/// storage. Register numbers: MC146818A datasheet, Table 2; century at 0x32
/// as the PC/AT BIOS keeps it (ACPI FADT CENTURY field).
public final class CMOSRTC: BusDevice {
    public static let base: UInt64 = 0x70
    public static let length: UInt64 = 2

    enum Register {
        static let seconds: UInt8 = 0x00, minutes: UInt8 = 0x02, hours: UInt8 = 0x04
        static let weekday: UInt8 = 0x06, day: UInt8 = 0x07, month: UInt8 = 0x08, year: UInt8 = 0x09
        static let statusA: UInt8 = 0x0A, statusB: UInt8 = 0x0B, statusC: UInt8 = 0x0C, statusD: UInt8 = 0x0D
        static let century: UInt8 = 0x32
    }
    /// Status A: UIP (bit 7) clear, 32.768 kHz time base (DV = 010), 1024 Hz rate (RS = 0110).
    static let statusAValue: UInt8 = 0x26
    /// Status B: 24-hour mode (bit 1), BCD (DM bit 2 clear), no interrupts enabled.
    static let statusBValue: UInt8 = 0x02
    /// Status D: VRT (bit 7): the battery-backed RAM is valid.
    static let statusDValue: UInt8 = 0x80

    struct State {
        var index: UInt8 = 0
        var ram = [UInt8](repeating: 0, count: 128)
    }
    private let state = Mutex(State())
    private let now: @Sendable () -> Date

    /// - Parameter now: the clock to report (tests pass a fixed date).
    public init(now: @escaping @Sendable () -> Date = { Date() }) {
        self.now = now
        state.withLock { s in
            s.ram[Int(Register.statusA)] = Self.statusAValue
            s.ram[Int(Register.statusB)] = Self.statusBValue
            s.ram[Int(Register.statusD)] = Self.statusDValue
        }
    }

    static func bcd(_ v: Int) -> UInt8 { UInt8(truncatingIfNeeded: ((v / 10) % 10) << 4 | (v % 10)) }

    /// A UTC date and time, as the RTC's registers count it.
    struct CivilTime: Equatable {
        var year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int
        /// 1 = Sunday ... 7 = Saturday.
        var weekday: Int
    }

    /// The UTC calendar date of `seconds` since 1970-01-01 00:00:00 UTC,
    /// proleptic Gregorian, by arithmetic alone (H. Hinnant's civil_from_days):
    /// no calendar or time zone database, so nothing is opened or read on the
    /// vCPU thread that reads the clock (the sandbox allows no file opens there).
    static func civil(_ seconds: Int64) -> CivilTime {
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secs = Int(seconds - days * 86_400)
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097                                         // [0, 146096]
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365   // [0, 399]
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)                   // [0, 365]
        let mp = (5 * doy + 2) / 153                                        // [0, 11], March first
        let day = Int(doy - (153 * mp + 2) / 5 + 1)
        let month = Int(mp < 10 ? mp + 3 : mp - 9)
        let year = Int(yoe + era * 400) + (month <= 2 ? 1 : 0)
        let weekday = Int(((days % 7) + 11) % 7) + 1                        // 1970-01-01 was a Thursday
        return CivilTime(year: year, month: month, day: day, hour: secs / 3600, minute: secs / 60 % 60,
                         second: secs % 60, weekday: weekday)
    }

    func timeRegister(_ r: UInt8) -> UInt8? {
        let t = now().timeIntervalSince1970
        let c = Self.civil(t.isFinite && t.magnitude < 1e15 ? Int64(t.rounded(.down)) : 0)
        switch r {
        case Register.seconds: return Self.bcd(c.second)
        case Register.minutes: return Self.bcd(c.minute)
        case Register.hours: return Self.bcd(c.hour)
        case Register.weekday: return Self.bcd(c.weekday) // 1 = Sunday, as the RTC counts
        case Register.day: return Self.bcd(c.day)
        case Register.month: return Self.bcd(c.month)
        case Register.year: return Self.bcd(c.year % 100)
        case Register.century: return Self.bcd(c.year / 100)
        default: return nil
        }
    }

    public func read(offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        guard data.count > 0 else { return }
        for i in 0..<data.count { data[i] = 0xFF }
        switch offset {
        case 0: data[0] = state.withLock { $0.index } // the index port reads back on most chipsets
        case 1:
            let index = state.withLock { $0.index }
            if let t = timeRegister(index) {
                data[0] = t
            } else {
                data[0] = state.withLock { s in
                    let v = s.ram[Int(index)]
                    if index == Register.statusC { s.ram[Int(index)] = 0 } // reading C clears its flags
                    return v
                }
            }
        default: break
        }
    }

    public func write(offset: UInt64, data: UnsafeRawBufferPointer) {
        guard let v = data.first else { return }
        state.withLock { s in
            switch offset {
            case 0: s.index = v & 0x7F
            case 1:
                switch s.index {
                case Register.seconds, Register.minutes, Register.hours, Register.weekday, Register.day,
                     Register.month, Register.year, Register.century, Register.statusC, Register.statusD:
                    break // time follows the host; C and D are read-only
                case Register.statusA:
                    s.ram[Int(Register.statusA)] = v & 0x7F // UIP is read-only
                case Register.statusB:
                    // Keep BCD and 24-hour mode: the time registers are always encoded that way.
                    s.ram[Int(Register.statusB)] = (v & ~UInt8(0x06)) | Self.statusBValue
                default:
                    s.ram[Int(s.index)] = v
                }
            default: break
            }
        }
    }
}
