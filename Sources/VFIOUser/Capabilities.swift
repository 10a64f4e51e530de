import FoundationEssentials

/// The capabilities in a VERSION message's JSON (vfio-user.rst, "Version"):
/// `{"capabilities": {...}}`, each member optional with the spec's default.
public struct VFIOUserCapabilities: Equatable, Sendable {
    /// Descriptors the sender takes in one message (default 1).
    public var maxMessageFDs: UInt64 = 1
    /// The largest `count` of a REGION/DMA READ or WRITE it takes (default 1 MiB).
    public var maxDataTransferSize: UInt64 = 1 << 20
    /// DMA windows it keeps at once (default 65535).
    public var maxDMAMaps: UInt64 = 65535
    /// Page sizes for DMA_MAP, OR-ed together (default 4 KiB only).
    public var pageSizes: UInt64 = 4096
    /// twin_socket.supported.
    public var twinSocket = false
    /// twin_socket.fd_index (replies only).
    public var twinSocketFDIndex: UInt64?
    /// write_multiple: REGION_WRITE_MULTI is taken.
    public var writeMultiple = false
    /// Whether a `migration` object was offered.
    public var migration = false
    /// Capability names offered that this client neither knows nor uses, sorted.
    public var unused: [String] = []

    public init() {}

    /// The limits vfio-user sets for any peer, so hostile numbers cannot size buffers.
    public static let maxDataTransferLimit: UInt64 = 64 << 20

    /// Parses the JSON text of a VERSION message. Missing members take the
    /// spec's defaults; a member of the wrong type, a number out of range or
    /// text that is not JSON is an error naming it.
    public static func parse(_ json: String) throws -> VFIOUserCapabilities {
        let root: Root
        do {
            root = try JSONDecoder().decode(Root.self, from: Data(json.utf8))
        } catch let error as VFIOUserError {
            throw error
        } catch {
            throw VFIOUserError.malformed("VERSION: the capabilities JSON does not parse: \(Self.describe(error))")
        }
        var caps = root.capabilities ?? VFIOUserCapabilities()
        guard caps.maxDataTransferSize > 0 else {
            throw VFIOUserError.malformed("VERSION: max_data_xfer_size is 0")
        }
        caps.maxDataTransferSize = min(caps.maxDataTransferSize, maxDataTransferLimit)
        return caps
    }

    /// This client's own capabilities, as the JSON for its VERSION request.
    public static func clientJSON(maxMessageFDs: Int, maxDataTransferSize: Int, twinSocket: Bool) -> String {
        var members = [
            "\"max_msg_fds\":\(maxMessageFDs)",
            "\"max_data_xfer_size\":\(maxDataTransferSize)",
        ]
        if twinSocket { members.append("\"twin_socket\":{\"supported\":true}") }
        return "{\"capabilities\":{" + members.joined(separator: ",") + "}}"
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context),
             DecodingError.dataCorrupted(let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? context.debugDescription : "\(path): \(context.debugDescription)"
        default:
            return "\(error)"
        }
    }

    private struct Root: Decodable {
        var capabilities: VFIOUserCapabilities?
    }

    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    private struct TwinSocket: Decodable {
        var supported: Bool?
        var fd_index: UInt64?
    }
}

extension VFIOUserCapabilities: Decodable {
    public init(from decoder: any Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: AnyKey.self)
        var unused: [String] = []
        for key in c.allKeys {
            switch key.stringValue {
            case "max_msg_fds": maxMessageFDs = try c.decode(UInt64.self, forKey: key)
            case "max_data_xfer_size": maxDataTransferSize = try c.decode(UInt64.self, forKey: key)
            case "max_dma_maps": maxDMAMaps = try c.decode(UInt64.self, forKey: key)
            case "pgsizes": pageSizes = try c.decode(UInt64.self, forKey: key)
            case "write_multiple": writeMultiple = try c.decode(Bool.self, forKey: key)
            case "twin_socket":
                let twin = try c.decode(TwinSocket.self, forKey: key)
                twinSocket = twin.supported ?? false
                twinSocketFDIndex = twin.fd_index
            case "migration": migration = true
            default: unused.append(key.stringValue)
            }
        }
        if migration { unused.append("migration") }
        self.unused = unused.sorted()
    }
}
