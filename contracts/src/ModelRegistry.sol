// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {DatanetRegistry} from "./DatanetRegistry.sol";

/// @title ModelRegistry
/// @notice LoRA models (adapters on a base model) with the Datanet versions they were trained
///         on and their price. An adapter is immutable: a new adapter is a new model id. The
///         owner may change the price (at most once per governed `priceGracePeriod`, during
///         which answers already given may still settle at the previous price) or deactivate
///         the model (inactive models cannot be settled).
contract ModelRegistry {
    /// @notice A Datanet version a model was trained on.
    struct DatanetVersion {
        uint256 datanetId;
        uint256 version;
    }

    /// @notice What a builder registers.
    struct ModelSpec {
        /// Base model name, e.g. a Hugging Face repo id.
        string baseModelId;
        /// Hash of the base model weights.
        bytes32 baseModelHash;
        /// Content hash of the adapter (PEFT files); unique per model.
        bytes32 adapterHash;
        /// Hash of the training manifest (hyper-parameters, data order, seeds).
        bytes32 trainingManifestHash;
        /// Datanet versions the adapter was trained on.
        DatanetVersion[] trainedOn;
        /// Price in wei of OPEN per 1,000 input+output tokens.
        uint256 pricePer1kTokens;
        string metadataURI;
    }

    /// @notice A registered model.
    struct Model {
        address owner;
        bool active;
        uint64 registeredAt;
        /// Price in wei of OPEN per 1,000 input+output tokens.
        uint256 pricePer1kTokens;
        bytes32 baseModelHash;
        bytes32 adapterHash;
        bytes32 trainingManifestHash;
        string baseModelId;
        string metadataURI;
        DatanetVersion[] trainedOn;
    }

    /// @notice A model's last price change.
    struct PriceChange {
        /// The price before the change (wei per 1,000 tokens).
        uint256 previousPrice;
        /// When it changed (0: never since registration).
        uint64 changedAt;
    }

    /// @notice The registry whose versions and licences models refer to.
    DatanetRegistry public immutable datanets;
    /// @notice Number of models; ids are 1..modelCount.
    uint256 public modelCount;
    /// @notice Model id registered for an adapter hash (0 if none).
    mapping(bytes32 adapterHash => uint256) public modelByAdapter;
    mapping(uint256 modelId => Model) private _models;
    /// @notice Each model's last price change.
    mapping(uint256 modelId => PriceChange) public priceChange;

    /// @notice A model was registered with `spec`.
    event ModelRegistered(uint256 indexed modelId, address indexed owner, bytes32 indexed adapterHash, ModelSpec spec);
    /// @notice The price of a model changed.
    event PriceUpdated(uint256 indexed modelId, uint256 pricePer1kTokens);
    /// @notice A model was deactivated.
    event ModelDeactivated(uint256 indexed modelId);

    /// @notice No model with this id.
    error ModelNotFound(uint256 modelId);
    /// @notice Caller is not the model's owner.
    error NotModelOwner(uint256 modelId, address caller);
    /// @notice The model is already inactive.
    error ModelInactive(uint256 modelId);
    /// @notice This adapter is already registered.
    error DuplicateAdapter(bytes32 adapterHash, uint256 modelId);
    /// @notice The adapter hash is zero.
    error EmptyAdapterHash();
    /// @notice A model must name at least one Datanet version.
    error NoTrainingData();
    /// @notice The Datanet version does not exist.
    error UnknownDatanetVersion(uint256 datanetId, uint256 version);
    /// @notice The caller has no licence for a Datanet it trained on.
    error NotLicensed(uint256 datanetId, address caller);
    /// @notice The price changed less than `priceGracePeriod` ago; the next change is possible
    ///         at `nextAt`.
    error PriceChangeTooSoon(uint256 modelId, uint64 nextAt);

    /// @param datanets_ The DatanetRegistry.
    constructor(DatanetRegistry datanets_) {
        datanets = datanets_;
    }

    /// @notice Registers a model owned by the caller, who must hold a licence for every
    ///         Datanet it was trained on.
    /// @return modelId The new model's id.
    function registerModel(ModelSpec calldata spec) external returns (uint256 modelId) {
        bytes32 adapterHash = spec.adapterHash;
        if (adapterHash == bytes32(0)) revert EmptyAdapterHash();
        uint256 existing = modelByAdapter[adapterHash];
        if (existing != 0) revert DuplicateAdapter(adapterHash, existing);
        if (spec.trainedOn.length == 0) revert NoTrainingData();
        modelId = ++modelCount;
        modelByAdapter[adapterHash] = modelId;
        Model storage m = _models[modelId];
        for (uint256 i = 0; i < spec.trainedOn.length; ++i) {
            DatanetVersion calldata dv = spec.trainedOn[i];
            if (dv.version >= datanets.versionCount(dv.datanetId)) {
                revert UnknownDatanetVersion(dv.datanetId, dv.version);
            }
            if (!datanets.hasLicence(dv.datanetId, msg.sender)) revert NotLicensed(dv.datanetId, msg.sender);
            m.trainedOn.push(dv);
        }
        m.owner = msg.sender;
        m.active = true;
        m.registeredAt = uint64(block.timestamp);
        m.pricePer1kTokens = spec.pricePer1kTokens;
        m.baseModelHash = spec.baseModelHash;
        m.adapterHash = adapterHash;
        m.trainingManifestHash = spec.trainingManifestHash;
        m.baseModelId = spec.baseModelId;
        m.metadataURI = spec.metadataURI;
        emit ModelRegistered(modelId, msg.sender, adapterHash, spec);
    }

    /// @notice Sets the price per 1,000 tokens. Owner only; at most once per the governed
    ///         `priceGracePeriod`, so one previous price covers every answer still unsettled.
    function setPrice(uint256 modelId, uint256 pricePer1kTokens) external {
        Model storage m = _onlyOwner(modelId);
        PriceChange storage c = priceChange[modelId];
        if (c.changedAt != 0) {
            uint64 nextAt = c.changedAt + datanets.params().priceGracePeriod();
            if (block.timestamp < nextAt) revert PriceChangeTooSoon(modelId, nextAt);
        }
        c.previousPrice = m.pricePer1kTokens;
        c.changedAt = uint64(block.timestamp);
        m.pricePer1kTokens = pricePer1kTokens;
        emit PriceUpdated(modelId, pricePer1kTokens);
    }

    /// @notice Deactivates the model for good. Owner only.
    function deactivate(uint256 modelId) external {
        Model storage m = _onlyOwner(modelId);
        if (!m.active) revert ModelInactive(modelId);
        m.active = false;
        emit ModelDeactivated(modelId);
    }

    /// @notice The model record.
    function getModel(uint256 modelId) external view returns (Model memory) {
        Model storage m = _models[modelId];
        if (m.owner == address(0)) revert ModelNotFound(modelId);
        return m;
    }

    /// @notice What settlement needs of a model in one call (reverts if unknown): owner,
    ///         activity, the current price, and the previous price with the time it was replaced
    ///         (`priceChangedAt` 0: never changed).
    function settlementInfo(uint256 modelId)
        external
        view
        returns (address owner, bool active, uint256 price, uint256 previousPrice, uint64 priceChangedAt)
    {
        Model storage m = _models[modelId];
        owner = m.owner;
        if (owner == address(0)) revert ModelNotFound(modelId);
        PriceChange storage c = priceChange[modelId];
        return (owner, m.active, m.pricePer1kTokens, c.previousPrice, c.changedAt);
    }

    function _onlyOwner(uint256 modelId) private view returns (Model storage m) {
        m = _models[modelId];
        if (m.owner == address(0)) revert ModelNotFound(modelId);
        if (m.owner != msg.sender) revert NotModelOwner(modelId, msg.sender);
    }
}
