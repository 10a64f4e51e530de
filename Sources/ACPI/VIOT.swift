import Bits

extension ACPIMachine {
    /// A virtio-iommu on PCI and the PCI functions it translates, as the
    /// VIOT tells the guest (`VIOT`, Sources/ACPI/README.md, "VIOT"). Plain
    /// numbers, so this target depends neither on PCI nor on Virtio.
    ///
    /// The guest's virtio-iommu driver names a function by its endpoint ID
    /// in ATTACH and PROBE requests (virtio 1.2 §5.13.6). Linux takes that
    /// ID from the VIOT (drivers/acpi/viot.c, `viot_pci_dev_iommu_init`):
    /// for a function with requester ID `rid` = bus << 8 | device << 3 |
    /// function inside a range, endpoint ID = `endpointStart` + (`rid` -
    /// `bdfStart`). SwiftVMM uses endpoint ID == RID (`endpointStart` =
    /// `bdfStart`, what `init(segment:bdf:endpointRIDs:)` builds), so its
    /// virtio-iommu finds the function from the ID alone.
    public struct VirtioIOMMU: Hashable, Sendable {
        /// One PCI range node: the functions `bdfStart...bdfEnd` of
        /// `segment` are translated, with consecutive endpoint IDs from
        /// `endpointStart`. Start and end are separate fields, not a
        /// `ClosedRange`, so an inverted pair reaches `ACPITables.build`
        /// and comes back as an error instead of trapping where it is made.
        public struct EndpointRange: Hashable, Sendable {
            /// PCI segment group (the node's segment start and end).
            public var segment: UInt16
            /// First and last requester ID (bus << 8 | device << 3 | function), inclusive.
            public var bdfStart: UInt16
            public var bdfEnd: UInt16
            /// The endpoint ID of the function at `bdfStart`.
            public var endpointStart: UInt32

            /// `endpointStart` nil means `bdfStart`: endpoint ID == RID.
            public init(segment: UInt16 = 0, bdfStart: UInt16, bdfEnd: UInt16, endpointStart: UInt32? = nil) {
                self.segment = segment
                self.bdfStart = bdfStart
                self.bdfEnd = bdfEnd
                self.endpointStart = endpointStart ?? UInt32(bdfStart)
            }

            /// The endpoint ID Linux gives the function `rid` of `segment`,
            /// or nil when the range does not hold it (or is inverted).
            public func endpointID(segment: UInt16 = 0, rid: UInt16) -> UInt32? {
                guard segment == self.segment, bdfStart <= rid, rid <= bdfEnd else { return nil }
                let (id, overflow) = endpointStart.addingReportingOverflow(UInt32(rid - bdfStart))
                return overflow ? nil : id
            }

            /// The last endpoint ID, or nil if it does not fit in 32 bits
            /// or the range is inverted.
            var endpointEnd: UInt32? { endpointID(segment: segment, rid: bdfEnd) }
        }

        /// The virtio-iommu's own PCI function: segment and requester ID.
        public var segment: UInt16
        public var bdf: UInt16
        /// The PCI range nodes, emitted in this order after the
        /// virtio-iommu node. At least one; no two may share a function or
        /// an endpoint ID, and none may hold the virtio-iommu itself.
        public var endpointRanges: [EndpointRange]

        public init(segment: UInt16 = 0, bdf: UInt16, endpointRanges: [EndpointRange]) {
            self.segment = segment
            self.bdf = bdf
            self.endpointRanges = endpointRanges
        }

        /// Ranges for the functions `endpointRIDs` of `segment`, with
        /// endpoint ID == RID: the RIDs sorted, and each run of consecutive
        /// RIDs one range (so 00:01.0, 00:01.1 and 00:02.0 = RIDs 0x08,
        /// 0x09, 0x10 give 0x08-0x09 and 0x10-0x10). Throws
        /// `ACPIError.invalidMachine` for a RID listed twice; everything
        /// else (no RIDs, the virtio-iommu among them) `ACPITables.build`
        /// reports.
        public init(segment: UInt16 = 0, bdf: UInt16, endpointRIDs: [UInt16]) throws {
            var ranges: [EndpointRange] = []
            for rid in endpointRIDs.sorted() {
                if let last = ranges.last {
                    guard rid != last.bdfEnd else {
                        throw ACPIError.invalidMachine("virtio-iommu endpoint \(Self.pciAddress(segment: segment, rid: rid)) is listed twice")
                    }
                    if last.bdfEnd != UInt16.max, rid == last.bdfEnd + 1 {
                        ranges[ranges.count - 1].bdfEnd = rid
                        continue
                    }
                }
                ranges.append(EndpointRange(segment: segment, bdfStart: rid, bdfEnd: rid))
            }
            self.init(segment: segment, bdf: bdf, endpointRanges: ranges)
        }

        /// The requester ID of bus:device.function (PCIe Base 4.0 §2.2.6.2:
        /// bus in bits 15:8, device in 7:3, function in 2:0). Throws
        /// `ACPIError.invalidMachine` for a device above 31 or a function above 7.
        public static func rid(bus: UInt8, device: UInt8, function: UInt8) throws -> UInt16 {
            guard device < 32, function < 8 else {
                throw ACPIError.invalidMachine("PCI function \(hexDigits(bus, width: 2)):\(hexDigits(device, width: 2)).\(function): devices are 0-31 (0x00-0x1f), functions 0-7")
            }
            return UInt16(bus) << 8 | UInt16(device) << 3 | UInt16(function)
        }

        /// The endpoint ID the guest uses for function `rid` of `segment`
        /// (the first range that holds it), or nil if it is not translated.
        public func endpointID(segment: UInt16 = 0, rid: UInt16) -> UInt32? {
            for r in endpointRanges {
                if let id = r.endpointID(segment: segment, rid: rid) { return id }
            }
            return nil
        }

        /// "0000:00:03.0", as Linux and the PCI target print a function.
        static func pciAddress(segment: UInt16, rid: UInt16) -> String {
            "\(hexDigits(segment, width: 4)):\(hexDigits(rid >> 8, width: 2)):\(hexDigits(rid >> 3 & 0x1F, width: 2)).\(rid & 0x7)"
        }

        static func describe(_ r: EndpointRange) -> String {
            "\(pciAddress(segment: r.segment, rid: r.bdfStart))-\(pciAddress(segment: r.segment, rid: r.bdfEnd))"
        }

        /// Throws `ACPIError.invalidMachine` for a description the VIOT
        /// cannot express or that would give the guest a wrong topology.
        func validate() throws {
            let iommuAddress = Self.pciAddress(segment: segment, rid: bdf)
            guard !endpointRanges.isEmpty else {
                throw ACPIError.invalidMachine("virtio-iommu \(iommuAddress) has no endpoint ranges: the VIOT needs at least one")
            }
            // node_count is 16 bits: the virtio-iommu node and the ranges.
            guard endpointRanges.count < Int(UInt16.max) else {
                throw ACPIError.invalidMachine("virtio-iommu \(iommuAddress) has \(endpointRanges.count) endpoint ranges, at most \(UInt16.max - 1) fit the VIOT's node count")
            }
            for r in endpointRanges {
                guard r.bdfStart <= r.bdfEnd else {
                    throw ACPIError.invalidMachine("virtio-iommu endpoint range \(Self.describe(r)) is inverted: its BDF start is after its BDF end")
                }
                guard r.endpointEnd != nil else {
                    throw ACPIError.invalidMachine("virtio-iommu endpoint range \(Self.describe(r)) starting at endpoint ID \(hex(r.endpointStart)) runs past endpoint ID 0xffffffff")
                }
                guard r.endpointID(segment: segment, rid: bdf) == nil else {
                    throw ACPIError.invalidMachine("virtio-iommu \(iommuAddress) lies inside its own endpoint range \(Self.describe(r)): it would translate itself")
                }
            }
            // Sorted, an overlap is always between neighbours.
            let byBDF = endpointRanges.sorted { ($0.segment, $0.bdfStart, $0.bdfEnd) < ($1.segment, $1.bdfStart, $1.bdfEnd) }
            for (a, b) in zip(byBDF, byBDF.dropFirst()) where a.segment == b.segment && b.bdfStart <= a.bdfEnd {
                throw ACPIError.invalidMachine("virtio-iommu endpoint ranges \(Self.describe(a)) and \(Self.describe(b)) overlap")
            }
            // One virtio-iommu, one endpoint ID space: two functions with
            // the same ID would share a domain without the guest asking.
            let byID = endpointRanges.sorted { ($0.endpointStart, $0.bdfStart) < ($1.endpointStart, $1.bdfStart) }
            for (a, b) in zip(byID, byID.dropFirst()) {
                let aEnd = a.endpointEnd ?? UInt32.max // checked above
                guard b.endpointStart > aEnd else {
                    throw ACPIError.invalidMachine("virtio-iommu endpoint ranges \(Self.describe(a)) and \(Self.describe(b)) give overlapping endpoint IDs \(hex(a.endpointStart))-\(hex(aEnd)) and \(hex(b.endpointStart))-\(hex(b.endpointEnd ?? UInt32.max))")
                }
            }
        }
    }
}

/// Virtual I/O Translation Table, signature "VIOT": which paravirtual
/// IOMMU translates which endpoints. The table has its own specification,
/// outside the ACPI 6.5 text; this layout is ACPICA's `struct
/// acpi_table_viot`, `acpi_viot_header`, `acpi_viot_pci_range` and
/// `acpi_viot_virtio_iommu_pci` (include/acpi/actbl3.h, the headers Linux
/// parses it with in drivers/acpi/viot.c), revision 0 as QEMU
/// (hw/acpi/viot.c) and ACPICA's template (source/compiler/dttemplate.h)
/// write it.
///
/// | Offset | Size | Field |
/// |---|---|---|
/// | 0 | 36 | Header, revision 0 |
/// | 36 | 2 | Node count |
/// | 38 | 2 | Node offset: of the first node, from the table start (48) |
/// | 40 | 8 | Reserved |
/// | 48 | 16 | virtio-iommu PCI node: type 3, reserved, length 16, segment u16, BDF u16, 8 reserved |
/// | 64 + 24n | 24 | PCI range node: type 1, reserved, length 24, endpoint start u32, segment start u16, segment end u16, BDF start u16, BDF end u16, output node u16, 6 reserved |
///
/// Like QEMU, the virtio-iommu node comes first, so every range's output
/// node (the IOMMU node's offset from the table start) is 48. Linux walks
/// `node count` nodes from `node offset` by each node's length
/// (`acpi_viot_init`); iasl walks to the table's end.
public enum VIOT {
    public static let signature = "VIOT"
    public static let revision: UInt8 = 0
    /// Node count, node offset, 8 reserved bytes.
    static let fieldsLength = 12
    /// Where the first node, the virtio-iommu's, starts: right after the
    /// fixed part (`sizeof(struct acpi_table_viot)`).
    public static let nodeOffset = SDTHeader.length + fieldsLength
    /// `ACPI_VIOT_NODE_PCI_RANGE`, `sizeof(struct acpi_viot_pci_range)`.
    static let pciRangeType: UInt8 = 1
    public static let pciRangeLength = 24
    /// `ACPI_VIOT_NODE_VIRTIO_IOMMU_PCI`, `sizeof(struct acpi_viot_virtio_iommu_pci)`.
    static let virtioIOMMUPCIType: UInt8 = 3
    public static let virtioIOMMUPCILength = 16

    public static func length(ranges: Int) -> Int {
        nodeOffset + virtioIOMMUPCILength + pciRangeLength * ranges
    }

    /// The VIOT for `iommu`, after checking it (`ACPIError.invalidMachine`).
    public static func build(iommu: ACPIMachine.VirtioIOMMU) throws -> [UInt8] {
        try iommu.validate()
        // Both fit: validate keeps the count below 0xFFFF, and 48 < 0xFFFF.
        let nodeCount = UInt16(truncatingIfNeeded: iommu.endpointRanges.count + 1)
        let iommuNode = UInt16(truncatingIfNeeded: nodeOffset)

        var body: [UInt8] = []
        body.appendLE(nodeCount)
        body.appendLE(iommuNode)
        body += [UInt8](repeating: 0, count: 8)

        body += [virtioIOMMUPCIType, 0]
        body.appendLE(UInt16(virtioIOMMUPCILength))
        body.appendLE(iommu.segment)
        body.appendLE(iommu.bdf)
        body += [UInt8](repeating: 0, count: 8)

        for r in iommu.endpointRanges {
            body += [pciRangeType, 0]
            body.appendLE(UInt16(pciRangeLength))
            body.appendLE(r.endpointStart)
            body.appendLE(r.segment) // segment start
            body.appendLE(r.segment) // segment end
            body.appendLE(r.bdfStart)
            body.appendLE(r.bdfEnd)
            body.appendLE(iommuNode) // output node
            body += [UInt8](repeating: 0, count: 6)
        }
        return try SDTHeader.table(signature: signature, revision: revision, body: body)
    }
}
