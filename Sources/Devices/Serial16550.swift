import Synchronization

/// A 16550A UART, modelled closely enough for Linux's 8250 driver to detect a
/// "16550A" and run a console on it (autoconfig, the loopback test, the THRE
/// re-assertion test in `serial8250_do_startup`).
///
/// Register and bit values are from the PC16550D datasheet (TI SNLS378,
/// Table 2 "Summary of Registers") and carry the names Linux gives them in
/// `include/uapi/linux/serial_reg.h`.
///
/// Model choices:
/// - Transmission is instantaneous: THR and the transmitter are always empty,
///   so LSR.THRE and LSR.TEMT always read 1. The baud divisor is stored and
///   read back but has no effect.
/// - The receive FIFO holds `rxCapacity` bytes (64 by default, as Cloud
///   Hypervisor and Firecracker do; the real part has 16). With FIFOs disabled
///   (16450 mode) it holds one byte, as the real RBR does.
/// - "Received data available" is raised whenever the FIFO holds data; the
///   trigger level and the character-timeout interrupt are not modelled (Linux
///   treats IIR 0x04 and 0x0C alike).
/// - The IRQ output is not gated by MCR.OUT2 (as in QEMU, Firecracker and
///   Cloud Hypervisor).
/// - A wider-than-byte access is split into byte accesses at consecutive
///   offsets, as the PC's bus does for an 8-bit ISA device. Offsets past the
///   eight registers read 0xFF and ignore writes.
///
/// All state is behind one lock; the interrupt line and the console are called
/// with the lock held, so their calls are ordered like the guest's accesses.
public final class Serial16550: BusDevice {
    /// COM1's base port and IRQ (the PC/AT assignment; Linux's
    /// `arch/x86/include/asm/serial.h` SERIAL_PORT_DFNS).
    public static let com1Base: UInt64 = 0x3F8
    public static let com1IRQ: UInt32 = 4
    /// The UART decodes eight consecutive ports (datasheet: A0-A2).
    public static let registerCount: UInt64 = 8
    /// The default receive FIFO size (see the type's documentation).
    public static let defaultRxCapacity = 64
    /// How much transmitted output `recentOutput` keeps.
    public static let defaultHistoryCapacity = 16 * 1024

    // Register offsets (datasheet Table 2; serial_reg.h UART_*).
    enum Reg {
        static let rbrThr: UInt64 = 0 // DLAB=0: RBR (read) / THR (write); DLAB=1: DLL
        static let ier: UInt64 = 1    // DLAB=0: IER; DLAB=1: DLM
        static let iirFcr: UInt64 = 2 // IIR (read) / FCR (write)
        static let lcr: UInt64 = 3
        static let mcr: UInt64 = 4
        static let lsr: UInt64 = 5
        static let msr: UInt64 = 6
        static let scr: UInt64 = 7
    }

    // Bits, named as in serial_reg.h.
    enum IER {
        static let rdi: UInt8 = 0x01  // UART_IER_RDI: received data available
        static let thri: UInt8 = 0x02 // UART_IER_THRI: THR empty
        static let rlsi: UInt8 = 0x04 // UART_IER_RLSI: receiver line status
        static let msi: UInt8 = 0x08  // UART_IER_MSI: modem status
        static let mask: UInt8 = 0x0F // bits 4-7 are always 0 on a 16550A
    }

    enum IIR {
        static let noInterrupt: UInt8 = 0x01  // UART_IIR_NO_INT
        static let msi: UInt8 = 0x00          // UART_IIR_MSI
        static let thri: UInt8 = 0x02         // UART_IIR_THRI
        static let rdi: UInt8 = 0x04          // UART_IIR_RDI
        static let rlsi: UInt8 = 0x06         // UART_IIR_RLSI
        static let fifoEnabled: UInt8 = 0xC0  // UART_IIR_FIFO_ENABLED_16550A
    }

    enum FCR {
        static let enable: UInt8 = 0x01      // UART_FCR_ENABLE_FIFO
        static let clearRx: UInt8 = 0x02     // UART_FCR_CLEAR_RCVR
        static let triggerMask: UInt8 = 0xC0 // UART_FCR_TRIGGER_MASK
    }

    enum LCR {
        static let dlab: UInt8 = 0x80 // UART_LCR_DLAB
    }

    enum MCR {
        static let dtr: UInt8 = 0x01  // UART_MCR_DTR
        static let rts: UInt8 = 0x02  // UART_MCR_RTS
        static let out1: UInt8 = 0x04 // UART_MCR_OUT1
        static let out2: UInt8 = 0x08 // UART_MCR_OUT2
        static let loop: UInt8 = 0x10 // UART_MCR_LOOP
        static let mask: UInt8 = 0x1F // bits 5-7 are always 0 on a 16550A
    }

    enum LSR {
        static let dr: UInt8 = 0x01   // UART_LSR_DR: data ready
        static let oe: UInt8 = 0x02   // UART_LSR_OE: overrun error
        static let thre: UInt8 = 0x20 // UART_LSR_THRE: THR empty
        static let temt: UInt8 = 0x40 // UART_LSR_TEMT: transmitter empty
    }

    enum MSR {
        static let dcts: UInt8 = 0x01 // UART_MSR_DCTS
        static let ddsr: UInt8 = 0x02 // UART_MSR_DDSR
        static let teri: UInt8 = 0x04 // UART_MSR_TERI: RI trailing edge
        static let ddcd: UInt8 = 0x08 // UART_MSR_DDCD
        static let cts: UInt8 = 0x10  // UART_MSR_CTS
        static let dsr: UInt8 = 0x20  // UART_MSR_DSR
        static let ri: UInt8 = 0x40   // UART_MSR_RI
        static let dcd: UInt8 = 0x80  // UART_MSR_DCD
    }

    /// Divisor 12 = 9600 baud from the PC's 1.8432 MHz clock (1843200 / 16 / 12).
    static let defaultDivisor: UInt16 = 12

    struct State {
        var ier: UInt8 = 0
        var lcr: UInt8 = 0
        var mcr: UInt8 = 0
        var fcr: UInt8 = 0
        var scr: UInt8 = 0
        var dll = UInt8(truncatingIfNeeded: Serial16550.defaultDivisor)
        var dlm = UInt8(truncatingIfNeeded: Serial16550.defaultDivisor >> 8)
        /// Sticky LSR error bits (only OE here), cleared by reading LSR.
        var lineErrors: UInt8 = 0
        /// MSR delta bits 0-3, cleared by reading MSR.
        var modemDeltas: UInt8 = 0
        var thrEmptyPending = false
        var lastReceived: UInt8 = 0
        var irqLevel = false
        var rx: ByteRing
        var history: ByteRing
        var inputSpaceHandler: (@Sendable () -> Void)?

        var fifoEnabled: Bool { fcr & FCR.enable != 0 }
        var loopback: Bool { mcr & MCR.loop != 0 }
        var dlab: Bool { lcr & LCR.dlab != 0 }
        /// How many bytes the receiver holds now: the FIFO, or RBR alone.
        var rxLimit: Int { fifoEnabled ? rx.capacity : 1 }
        var inputSpace: Int { loopback ? 0 : max(0, rxLimit - rx.count) }

        /// The interrupt to report, by the datasheet's priority ("Interrupt
        /// Control Functions" table under IIR):
        /// line status > received data > THR empty > modem status.
        var pendingInterrupt: UInt8? {
            if ier & IER.rlsi != 0 && lineErrors != 0 { return IIR.rlsi }
            if ier & IER.rdi != 0 && !rx.isEmpty { return IIR.rdi }
            if ier & IER.thri != 0 && thrEmptyPending { return IIR.thri }
            if ier & IER.msi != 0 && modemDeltas != 0 { return IIR.msi }
            return nil
        }

        /// MSR bits 4-7. In loopback they follow MCR (datasheet, MCR bit 4:
        /// DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD); otherwise a peer that is
        /// always ready (CTS, DSR, DCD), so the console never stalls.
        var modemLines: UInt8 {
            guard loopback else { return MSR.cts | MSR.dsr | MSR.dcd }
            var v: UInt8 = 0
            if mcr & MCR.dtr != 0 { v |= MSR.dsr }
            if mcr & MCR.rts != 0 { v |= MSR.cts }
            if mcr & MCR.out1 != 0 { v |= MSR.ri }
            if mcr & MCR.out2 != 0 { v |= MSR.dcd }
            return v
        }
    }

    private let state: Mutex<State>
    private let interrupt: InterruptLine
    private let console: ConsoleOutput

    /// - Parameters:
    ///   - interrupt: the UART's IRQ line; set only when its level changes.
    ///   - console: where transmitted bytes go (not in loopback mode).
    ///   - rxCapacity: receive FIFO size in bytes (at least 1).
    ///   - historyCapacity: how many transmitted bytes `recentOutput` keeps.
    public init(interrupt: InterruptLine, console: ConsoleOutput,
                rxCapacity: Int = Serial16550.defaultRxCapacity,
                historyCapacity: Int = Serial16550.defaultHistoryCapacity) {
        self.interrupt = interrupt
        self.console = console
        state = Mutex(State(rx: ByteRing(capacity: rxCapacity), history: ByteRing(capacity: historyCapacity)))
    }

    // MARK: Host side

    /// Offers received bytes to the guest. Returns how many were accepted (a
    /// prefix of `bytes`); the caller holds the rest back and retries when
    /// `inputSpace` is non-zero (see `setInputSpaceHandler`). Nothing is
    /// accepted in loopback mode, where the receiver is disconnected.
    public func enqueueInput(_ bytes: [UInt8]) -> Int {
        state.withLock { s in
            var accepted = 0
            for b in bytes {
                guard s.inputSpace > 0, s.rx.append(b, limit: s.rxLimit) else { break }
                accepted += 1
            }
            if accepted > 0 { updateInterrupt(&s) }
            return accepted
        }
    }

    /// How many bytes `enqueueInput` would accept now.
    public var inputSpace: Int { state.withLock { $0.inputSpace } }

    /// `handler` is called (without the device lock held, on a vCPU thread)
    /// whenever a guest access turns a zero `inputSpace` into a non-zero one,
    /// so a stdin thread can sleep instead of polling. Pass nil to remove it.
    public func setInputSpaceHandler(_ handler: (@Sendable () -> Void)?) {
        state.withLock { $0.inputSpaceHandler = handler }
    }

    /// The last transmitted bytes (up to the history capacity), oldest first,
    /// for error reports.
    public var recentOutput: [UInt8] { state.withLock { $0.history.elements } }

    // MARK: Guest side

    public func read(offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        let notify: (@Sendable () -> Void)? = state.withLock { s in
            let spaceBefore = s.inputSpace
            for i in data.indices {
                let (off, overflow) = offset.addingReportingOverflow(UInt64(i))
                data[i] = overflow ? 0xFF : readRegister(off, &s)
            }
            updateInterrupt(&s)
            return spaceBefore == 0 && s.inputSpace > 0 ? s.inputSpaceHandler : nil
        }
        notify?()
    }

    public func write(offset: UInt64, data: UnsafeRawBufferPointer) {
        let notify: (@Sendable () -> Void)? = state.withLock { s in
            let spaceBefore = s.inputSpace
            for i in data.indices {
                let (off, overflow) = offset.addingReportingOverflow(UInt64(i))
                if !overflow { writeRegister(off, data[i], &s) }
            }
            updateInterrupt(&s)
            return spaceBefore == 0 && s.inputSpace > 0 ? s.inputSpaceHandler : nil
        }
        notify?()
    }

    private func readRegister(_ offset: UInt64, _ s: inout State) -> UInt8 {
        switch offset {
        case Reg.rbrThr:
            if s.dlab { return s.dll }
            if let b = s.rx.removeFirst() { s.lastReceived = b }
            // An empty RBR reads its last value, as the hardware does.
            return s.lastReceived
        case Reg.ier:
            return s.dlab ? s.dlm : s.ier
        case Reg.iirFcr:
            let source = s.pendingInterrupt
            // Reading IIR clears a THR-empty interrupt it reports (datasheet,
            // "Interrupt Control Functions": reset by reading IIR or writing THR).
            if source == IIR.thri { s.thrEmptyPending = false }
            return (source ?? IIR.noInterrupt) | (s.fifoEnabled ? IIR.fifoEnabled : 0)
        case Reg.lcr:
            return s.lcr
        case Reg.mcr:
            return s.mcr
        case Reg.lsr:
            var v = LSR.thre | LSR.temt | s.lineErrors
            if !s.rx.isEmpty { v |= LSR.dr }
            s.lineErrors = 0
            return v
        case Reg.msr:
            let v = s.modemLines | s.modemDeltas
            s.modemDeltas = 0
            return v
        case Reg.scr:
            return s.scr
        default:
            return 0xFF
        }
    }

    private func writeRegister(_ offset: UInt64, _ value: UInt8, _ s: inout State) {
        switch offset {
        case Reg.rbrThr:
            if s.dlab { s.dll = value; return }
            transmit(value, &s)
        case Reg.ier:
            if s.dlab { s.dlm = value; return }
            let new = value & IER.mask
            // Enabling THRI while THR is empty raises the interrupt at once
            // (on the rising edge, as QEMU and Bochs do; Linux's
            // UART_BUG_THRE test depends on it). Disabling it forgets it.
            if (new ^ s.ier) & IER.thri != 0 {
                s.thrEmptyPending = new & IER.thri != 0
            }
            s.ier = new
        case Reg.iirFcr:
            let enable = value & FCR.enable != 0
            // Changing FCR0 clears both FIFOs (datasheet, FCR bit 0).
            if enable != s.fifoEnabled { s.rx.removeAll() }
            if enable {
                if value & FCR.clearRx != 0 { s.rx.removeAll() }
                // The TX FIFO (bit 2) is always empty. Other bits are only
                // programmed while FCR0 is 1.
                s.fcr = value & (FCR.triggerMask | FCR.enable)
            } else {
                s.fcr = 0
            }
        case Reg.lcr:
            s.lcr = value
        case Reg.mcr:
            let before = s.modemLines
            s.mcr = value & MCR.mask
            let after = s.modemLines
            let changed = before ^ after
            if changed & MSR.cts != 0 { s.modemDeltas |= MSR.dcts }
            if changed & MSR.dsr != 0 { s.modemDeltas |= MSR.ddsr }
            if changed & MSR.dcd != 0 { s.modemDeltas |= MSR.ddcd }
            if before & MSR.ri != 0 && after & MSR.ri == 0 { s.modemDeltas |= MSR.teri }
        case Reg.scr:
            s.scr = value
        default:
            // LSR and MSR are read-only (writes are for factory test only);
            // offsets past the registers are open bus.
            break
        }
    }

    private func transmit(_ byte: UInt8, _ s: inout State) {
        if s.loopback {
            // Loopback: the transmitter feeds the receiver (datasheet, MCR bit 4).
            if !s.rx.append(byte, limit: s.rxLimit) {
                // Overrun. In FIFO mode the new character is lost; in 16450
                // mode it overwrites RBR (datasheet LSR bit 1).
                if !s.fifoEnabled {
                    s.rx.removeLast()
                    _ = s.rx.append(byte, limit: s.rxLimit)
                }
                s.lineErrors |= LSR.oe
            }
        } else {
            console.write([byte])
            s.history.appendOverwriting(byte)
        }
        // The byte left at once, so THR is empty again.
        s.thrEmptyPending = true
    }

    private func updateInterrupt(_ s: inout State) {
        let level = s.pendingInterrupt != nil
        guard level != s.irqLevel else { return }
        s.irqLevel = level
        interrupt.setLevel(level)
    }
}
