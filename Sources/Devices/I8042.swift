import Synchronization

/// The PS/2 controller (Intel 8042) at ports 0x60 (data) and 0x64
/// (status/command), just enough for Linux's i8042 driver and for
/// `reboot=k`, which pulses the CPU reset line with command 0xFE.
///
/// Insert it once at `I8042.base` with `I8042.length` (0x60-0x64, as
/// Firecracker does); offsets 1-3 (ports 0x61-0x63) read 0xFF and ignore
/// writes. Port 0x61 is the PC speaker/NMI port, which KVM's in-kernel PIT
/// handles before it reaches the bus.
///
/// No keyboard or mouse is attached and the controller has no interrupt lines:
/// bytes sent to the keyboard or the aux port get no answer, and the guest
/// reads controller replies by polling the status register. Command and bit
/// values are Linux's (`drivers/input/serio/i8042.h`), which follow the IBM
/// PC/AT Technical Reference's 8042 description.
public final class I8042: BusDevice {
    public static let base: UInt64 = 0x60
    public static let length: UInt64 = 5
    static let dataOffset: UInt64 = 0    // port 0x60
    static let commandOffset: UInt64 = 4 // port 0x64

    enum Status {
        static let outputFull: UInt8 = 0x01 // I8042_STR_OBF
        static let system: UInt8 = 0x04     // system flag: self-test passed (POST done)
        static let command: UInt8 = 0x08    // I8042_STR_CMDDAT: last write was to 0x64
        static let unlocked: UInt8 = 0x10   // I8042_STR_KEYLOCK: 1 = keyboard not inhibited
    }

    enum Command {
        static let readCTR: UInt8 = 0x20     // I8042_CMD_CTL_RCTR
        static let writeCTR: UInt8 = 0x60    // I8042_CMD_CTL_WCTR
        static let auxDisable: UInt8 = 0xA7  // I8042_CMD_AUX_DISABLE
        static let auxEnable: UInt8 = 0xA8   // I8042_CMD_AUX_ENABLE
        static let auxTest: UInt8 = 0xA9     // I8042_CMD_AUX_TEST
        static let selfTest: UInt8 = 0xAA    // I8042_CMD_CTL_TEST
        static let kbdTest: UInt8 = 0xAB     // I8042_CMD_KBD_TEST
        static let kbdDisable: UInt8 = 0xAD  // I8042_CMD_KBD_DISABLE
        static let kbdEnable: UInt8 = 0xAE   // I8042_CMD_KBD_ENABLE
        static let readOutputPort: UInt8 = 0xD0
        static let writeOutputPort: UInt8 = 0xD1
        static let writeKbdOutput: UInt8 = 0xD2  // I8042_CMD_KBD_LOOP
        static let writeAuxOutput: UInt8 = 0xD3  // I8042_CMD_AUX_LOOP
        static let writeAux: UInt8 = 0xD4        // I8042_CMD_AUX_SEND
        static let pulseFirst: UInt8 = 0xF0      // 0xF0-0xFF pulse output port bits 0-3
    }

    enum CTR {
        static let kbdDisabled: UInt8 = 0x10 // I8042_CTR_KBDDIS
        static let auxDisabled: UInt8 = 0x20 // I8042_CTR_AUXDIS
        /// KBDINT | system flag | XLATE: what a PC BIOS leaves after POST.
        static let afterPOST: UInt8 = 0x45
    }

    /// Replies to the self-test and interface tests (I8042_RET_CTL_TEST = 0x55;
    /// 0x00 = "no error" for the interface tests).
    static let selfTestPassed: UInt8 = 0x55
    static let interfaceOK: UInt8 = 0x00
    /// Output port bit 0 is the CPU reset line (active low), bit 1 the A20 gate.
    static let outputPortReset: UInt8 = 0x01
    static let outputPortDefault: UInt8 = 0x03
    /// The controller's output buffer is one byte; a few replies may queue here.
    static let outputQueueCapacity = 16

    struct State {
        var ctr = CTR.afterPOST
        var outputPort = I8042.outputPortDefault
        var output = ByteRing(capacity: I8042.outputQueueCapacity)
        var lastOutput: UInt8 = 0
        /// A command waiting for its data byte on port 0x60.
        var pendingCommand: UInt8?
        var lastWriteWasCommand = false
    }

    private let state = Mutex(State())
    private let events: MachineEventSink

    /// - Parameter events: receives `.reset` when the guest pulses the reset line.
    public init(events: MachineEventSink) {
        self.events = events
    }

    public func read(offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        state.withLock { s in
            for i in data.indices {
                let (off, overflow) = offset.addingReportingOverflow(UInt64(i))
                data[i] = overflow ? 0xFF : readPort(off, &s)
            }
        }
    }

    public func write(offset: UInt64, data: UnsafeRawBufferPointer) {
        // Events are sent after the lock is dropped: the sink may do anything.
        let raised: [MachineEvent] = state.withLock { s in
            var raised: [MachineEvent] = []
            for i in data.indices {
                let (off, overflow) = offset.addingReportingOverflow(UInt64(i))
                if !overflow, let e = writePort(off, data[i], &s) { raised.append(e) }
            }
            return raised
        }
        for e in raised { events.machineEvent(e) }
    }

    private func readPort(_ offset: UInt64, _ s: inout State) -> UInt8 {
        switch offset {
        case I8042.dataOffset:
            // An empty output buffer reads its last value.
            if let b = s.output.removeFirst() { s.lastOutput = b }
            return s.lastOutput
        case I8042.commandOffset:
            var v = Status.system | Status.unlocked
            if !s.output.isEmpty { v |= Status.outputFull }
            if s.lastWriteWasCommand { v |= Status.command }
            return v
        default:
            return 0xFF
        }
    }

    private func reply(_ byte: UInt8, _ s: inout State) {
        // A guest that never reads the replies loses the newest ones.
        _ = s.output.append(byte, limit: s.output.capacity)
    }

    private func writePort(_ offset: UInt64, _ value: UInt8, _ s: inout State) -> MachineEvent? {
        switch offset {
        case I8042.dataOffset:
            s.lastWriteWasCommand = false
            let pending = s.pendingCommand
            s.pendingCommand = nil
            switch pending {
            case Command.writeCTR:
                s.ctr = value
            case Command.writeOutputPort:
                s.outputPort = value
                if value & I8042.outputPortReset == 0 { return .reset }
            case Command.writeKbdOutput:
                reply(value, &s)
            default:
                // To the keyboard (none attached), or D3/D4 to the aux port
                // (none attached): no answer.
                break
            }
            return nil
        case I8042.commandOffset:
            s.lastWriteWasCommand = true
            s.pendingCommand = nil
            switch value {
            case Command.readCTR: reply(s.ctr, &s)
            case Command.writeCTR, Command.writeOutputPort, Command.writeKbdOutput,
                 Command.writeAuxOutput, Command.writeAux:
                s.pendingCommand = value
            case Command.auxDisable: s.ctr |= CTR.auxDisabled
            case Command.auxEnable: s.ctr &= ~CTR.auxDisabled
            case Command.kbdDisable: s.ctr |= CTR.kbdDisabled
            case Command.kbdEnable: s.ctr &= ~CTR.kbdDisabled
            case Command.auxTest, Command.kbdTest: reply(I8042.interfaceOK, &s)
            case Command.selfTest: reply(I8042.selfTestPassed, &s)
            case Command.readOutputPort: reply(s.outputPort, &s)
            case Command.pulseFirst...0xFF:
                // Bits 0-3 that are 0 are pulsed low; bit 0 is CPU reset.
                // 0xFE is what Linux's `reboot=k` sends.
                if value & I8042.outputPortReset == 0 { return .reset }
            default:
                break
            }
            return nil
        default:
            return nil
        }
    }
}
