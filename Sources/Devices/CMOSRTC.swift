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

    func timeRegister(_ r: UInt8) -> UInt8? {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC") ?? cal.timeZone
        let c = cal.dateComponents([.second, .minute, .hour, .weekday, .day, .month, .year], from: now())
        switch r {
        case Register.seconds: return Self.bcd(c.second ?? 0)
        case Register.minutes: return Self.bcd(c.minute ?? 0)
        case Register.hours: return Self.bcd(c.hour ?? 0)
        case Register.weekday: return Self.bcd(c.weekday ?? 1) // 1 = Sunday, as the RTC counts
        case Register.day: return Self.bcd(c.day ?? 1)
        case Register.month: return Self.bcd(c.month ?? 1)
        case Register.year: return Self.bcd((c.year ?? 2000) % 100)
        case Register.century: return Self.bcd((c.year ?? 2000) / 100)
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
