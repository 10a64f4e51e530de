import Bits

/// The few AML statements and expressions a control method needs beyond
/// Return: If/Else, logical and bitwise operators, Store, buffer fields,
/// method arguments and locals (ACPI 6.5 §20.2.5.3, §20.2.5.4, §20.2.6).
/// The PCI root bridge's _OSC is written with them.

extension AMLOpcode {
    /// §20.2.6.1 Arg Objects Encoding: Arg0Op 0x68 ... Arg6Op 0x6E.
    static let arg0: UInt8 = 0x68
    /// §20.2.6.2 Local Objects Encoding: Local0Op 0x60 ... Local7Op 0x67.
    static let local0: UInt8 = 0x60

    /// §20.2.5.2 Named Objects Encoding.
    static let createDWordField: UInt8 = 0x8A

    /// §20.2.5.3 Statement Opcodes Encoding.
    static let `if`: UInt8 = 0xA0
    static let `else`: UInt8 = 0xA1

    /// §20.2.5.4 Expression Opcodes Encoding.
    static let store: UInt8 = 0x70
    static let and: UInt8 = 0x7B
    static let or: UInt8 = 0x7D
    static let lNot: UInt8 = 0x92
    static let lEqual: UInt8 = 0x93
}

/// ArgN (ACPI 6.5 §20.2.6.1): the method's argument N, 0...6.
public struct AMLArg: AMLTerm, Hashable, Sendable {
    /// A method has at most 7 arguments (MethodFlags ArgCount is 3 bits, Arg6Op is the last).
    public static let maxIndex = 6

    public let index: Int

    public init(_ index: Int) throws {
        guard (0...Self.maxIndex).contains(index) else {
            throw ACPIError.invalidTerm("Arg\(index): method arguments are Arg0...Arg\(Self.maxIndex)")
        }
        self.index = index
    }

    public func encode(into bytes: inout [UInt8]) throws {
        bytes.append(AMLOpcode.arg0 + UInt8(truncatingIfNeeded: index)) // 0...6, checked in init
    }
}

/// LocalN (ACPI 6.5 §20.2.6.2): the method's local variable N, 0...7.
public struct AMLLocal: AMLTerm, Hashable, Sendable {
    public static let maxIndex = 7

    public let index: Int

    public init(_ index: Int) throws {
        guard (0...Self.maxIndex).contains(index) else {
            throw ACPIError.invalidTerm("Local\(index): method locals are Local0...Local\(Self.maxIndex)")
        }
        self.index = index
    }

    public func encode(into bytes: inout [UInt8]) throws {
        bytes.append(AMLOpcode.local0 + UInt8(truncatingIfNeeded: index)) // 0...7, checked in init
    }
}

/// DefIfElse (ACPI 6.5 §20.2.5.3): IfOp PkgLength Predicate TermList, then
/// optionally DefElse: ElseOp PkgLength TermList.
public struct AMLIf: AMLTerm {
    public let predicate: any AMLTerm
    public let then: [any AMLTerm]
    /// nil: no Else at all (not an empty one).
    public let otherwise: [any AMLTerm]?

    public init(_ predicate: any AMLTerm, then: [any AMLTerm], else otherwise: [any AMLTerm]? = nil) {
        self.predicate = predicate
        self.then = then
        self.otherwise = otherwise
    }

    public func encode(into bytes: inout [UInt8]) throws {
        var body = try predicate.encoded()
        for t in then { try t.encode(into: &body) }
        try AMLPkgLength.wrap([AMLOpcode.if], body, into: &bytes)
        if let otherwise = otherwise {
            var elseBody: [UInt8] = []
            for t in otherwise { try t.encode(into: &elseBody) }
            try AMLPkgLength.wrap([AMLOpcode.else], elseBody, into: &bytes)
        }
    }
}

/// DefLEqual (ACPI 6.5 §20.2.5.4): LEqualOp Operand Operand, ASL `LEqual (a, b)`
/// or `a == b`. Compares integers, strings or buffers.
public struct AMLLEqual: AMLTerm {
    public let lhs: any AMLTerm
    public let rhs: any AMLTerm

    public init(_ lhs: any AMLTerm, _ rhs: any AMLTerm) {
        self.lhs = lhs
        self.rhs = rhs
    }

    public func encode(into bytes: inout [UInt8]) throws {
        bytes.append(AMLOpcode.lEqual)
        try lhs.encode(into: &bytes)
        try rhs.encode(into: &bytes)
    }
}

/// DefLNot (ACPI 6.5 §20.2.5.4): LNotOp Operand, ASL `LNot (a)` or `!a`.
/// `AMLLNot(AMLLEqual(a, b))` is ASL's `LNotEqual (a, b)`: the grammar has
/// no LNotEqual opcode of its own, it is LNotOp LEqualOp (§20.2.5.4).
public struct AMLLNot: AMLTerm {
    public let operand: any AMLTerm

    public init(_ operand: any AMLTerm) { self.operand = operand }

    public func encode(into bytes: inout [UInt8]) throws {
        bytes.append(AMLOpcode.lNot)
        try operand.encode(into: &bytes)
    }
}

/// DefAnd / DefOr (ACPI 6.5 §20.2.5.4): AndOp or OrOp, Operand Operand
/// Target. Target is a SuperName to store the result in, or NullName
/// (result only returned) when nil.
public struct AMLBitwise: AMLTerm {
    public enum Operation: Hashable, Sendable {
        case and, or

        var opcode: UInt8 {
            switch self {
            case .and: return AMLOpcode.and
            case .or: return AMLOpcode.or
            }
        }
    }

    public let operation: Operation
    public let lhs: any AMLTerm
    public let rhs: any AMLTerm
    public let target: (any AMLTerm)?

    public init(_ operation: Operation, _ lhs: any AMLTerm, _ rhs: any AMLTerm, target: (any AMLTerm)?) {
        self.operation = operation
        self.lhs = lhs
        self.rhs = rhs
        self.target = target
    }

    public func encode(into bytes: inout [UInt8]) throws {
        bytes.append(operation.opcode)
        try lhs.encode(into: &bytes)
        try rhs.encode(into: &bytes)
        if let target = target {
            try target.encode(into: &bytes)
        } else {
            bytes.append(AMLOpcode.nullName)
        }
    }
}

/// DefStore (ACPI 6.5 §20.2.5.4): StoreOp TermArg SuperName, ASL
/// `Store (value, target)` or `target = value`.
public struct AMLStore: AMLTerm {
    public let value: any AMLTerm
    public let target: any AMLTerm

    public init(_ value: any AMLTerm, into target: any AMLTerm) {
        self.value = value
        self.target = target
    }

    public func encode(into bytes: inout [UInt8]) throws {
        bytes.append(AMLOpcode.store)
        try value.encode(into: &bytes)
        try target.encode(into: &bytes)
    }
}

/// DefCreateDWordField (ACPI 6.5 §20.2.5.2): CreateDWordFieldOp SourceBuff
/// ByteIndex NameString, ASL `CreateDWordField (buffer, index, NAME)`: NAME
/// becomes the 32-bit little-endian field at byte `index` of the buffer.
public struct AMLCreateDWordField: AMLTerm {
    public let buffer: any AMLTerm
    public let byteIndex: any AMLTerm
    public let name: AMLNameString

    public init(_ buffer: any AMLTerm, byteIndex: any AMLTerm, _ name: String) throws {
        self.buffer = buffer
        self.byteIndex = byteIndex
        self.name = try AMLNameString(name)
    }

    public func encode(into bytes: inout [UInt8]) throws {
        bytes.append(AMLOpcode.createDWordField)
        try buffer.encode(into: &bytes)
        try byteIndex.encode(into: &bytes)
        try name.encode(into: &bytes)
    }
}

/// ASL's `ToUUID ("aabbccdd-eeff-gghh-iijj-kkllmmnnoopp")` (ACPI 6.5
/// §19.6.142): a 16-byte Buffer with the first three groups little-endian
/// and the last two in order, i.e. dd cc bb aa ff ee hh gg ii jj kk ll mm
/// nn oo pp. Hex digits in either case.
public struct AMLUUID: AMLTerm, Hashable, Sendable {
    /// The 16 bytes in buffer order.
    public let bytes: [UInt8]

    public init(_ text: String) throws {
        let groups = text.split(separator: "-", omittingEmptySubsequences: false)
        guard groups.map(\.utf8.count) == [8, 4, 4, 4, 12] else {
            throw ACPIError.invalidTerm("UUID '\(text)': expected 8-4-4-4-12 hex digits")
        }
        var parsed: [[UInt8]] = []
        for group in groups {
            let digits = Array(group.utf8)
            var groupBytes: [UInt8] = []
            for i in stride(from: 0, to: digits.count, by: 2) {
                guard let high = hexDigitValue(digits[i]), let low = hexDigitValue(digits[i + 1]) else {
                    throw ACPIError.invalidTerm("UUID '\(text)': '\(group)' is not hexadecimal")
                }
                groupBytes.append(high << 4 | low)
            }
            parsed.append(groupBytes)
        }
        bytes = parsed[0].reversed() + parsed[1].reversed() + parsed[2].reversed() + parsed[3] + parsed[4]
    }

    public func encode(into out: inout [UInt8]) throws {
        try AMLBuffer(bytes).encode(into: &out)
    }
}
