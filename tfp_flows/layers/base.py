"""Keras layers that own a flow's weights and hand out its bijector."""

import keras

from tfp_flows.validation import check_context_size


def split_mixed_policy(layer):
    """Keeps a mixed policy (e.g. "mixed_bfloat16") for the networks; the layer itself computes
    in the variable dtype. Returns the policy the layer was given, for its networks and config.

    A flow's values and log-determinants add up over many steps and lose too
    much in 16-bit floats, so only the networks that compute the steps'
    parameters run in the policy's compute dtype (their outputs are cast back).
    """
    policy = layer.dtype_policy
    if policy.compute_dtype != policy.variable_dtype:
        layer.dtype_policy = policy.variable_dtype
    return policy


class NetworkWithFloat32Ends:
    """Mixin for the networks inside flow steps (`Conditioner`, the image couplings' ResNet).

    Under a mixed policy ("mixed_bfloat16", "mixed_float16") such a network
    gives its first and last layers `outer_dtype_policy` and takes its inputs
    as they are: it reads the flow's values and writes the step's parameters
    in float32 and computes in 16 bits in between (a 16-bit first layer would
    round the inputs, to 3 digits in bfloat16, and so lower the
    log-likelihood of a sharp density). Without one, both are the layer's dtype.
    """

    @property
    def outer_dtype_policy(self):
        """The policy of the first and the last layer: the variable dtype, never 16-bit."""
        return self.dtype_policy.variable_dtype

    @property
    def input_dtype(self):
        # Keras would cast the inputs to the compute dtype: the first layer reads float32.
        return self.dtype_policy.variable_dtype


class FlowLayer(keras.layers.Layer):
    """Base class: a Keras 3 layer that owns the weights of one bijector.

    Under Keras 3 a weight held only by a `tf.Module` (a TFP bijector) is
    silently never trained, so the layer creates every weight (`add_weight`,
    sub-layers) and the bijector it builds only *references* them, through
    `variable.value`; derived parameters are computed inside the bijector's
    methods, so they follow the weights as they train.

    Subclasses implement `build_weights(event_size)` and `make_bijector()`,
    and create their networks (and sub-steps) with `dtype=self.network_dtype_policy`:
    under a mixed policy ("mixed_bfloat16", "mixed_float16") the networks
    compute in 16 bits while the step's own values and log-dets stay in float32.
    The bijector exists once the layer is built (`layer.bijector`); calling
    the layer applies the bijector's forward map (base → data).

    A conditional layer (`context_size` set) makes a bijector that takes a
    `context` keyword, a float tensor [..., context_size], in every method:
    `layer.bijector.forward(z, context=c)`. Inside a `tfb.Chain` the keyword
    reaches it by the bijector's name (`chain.forward(z, **{name: {"context":
    c}})`); `FlowModel` routes it for you.
    """

    supports_context = False  # True in subclasses whose bijector takes a context

    def __init__(self, context_size=None, **kwargs):
        super().__init__(**kwargs)
        self.network_dtype_policy = split_mixed_policy(self)
        self.context_size = check_context_size(context_size)
        if self.conditional and not self.supports_context:
            raise ValueError(f"{type(self).__name__} cannot be conditional: it takes no context.")

    @property
    def conditional(self):
        return self.context_size is not None

    # The event rank the bijector acts on: 1 for vectors (build_weights gets the
    # event size), 3 for images (build_weights gets (height, width, channels)).
    event_ndims = 1

    def build(self, input_shape):
        event_shape = tuple(input_shape)[-self.event_ndims :]
        if len(event_shape) != self.event_ndims or any(d is None for d in event_shape):
            raise ValueError(
                f"{self.name}: the last {self.event_ndims} axes of the input shape (the event) "
                f"must be known, got input shape {tuple(input_shape)}."
            )
        event_shape = tuple(int(d) for d in event_shape)
        self.build_weights(event_shape[0] if self.event_ndims == 1 else event_shape)
        self._bijector = self.make_bijector()
        # Keras owns the weights; the bijector (a tf.Module) also lists their tf.Variables,
        # so that TFP sees them: `model.distribution.trainable_variables` for
        # `tfp.math.minimize` and `tfp.vi.fit_surrogate_posterior` (the same variables
        # Keras trains, not copies).
        self._bijector._layer_variables = tuple(weight.value for weight in self.weights)

    def build_weights(self, event_size):
        """Creates the weights for events of `event_size` dimensions (or an image event shape)."""

    def make_bijector(self):
        raise NotImplementedError

    # --- Data-dependent initialisation ---------------------------------------

    @property
    def needs_data_initialization(self):
        """True while this step waits to set its parameters from data (ActNorm); False here."""
        return False

    def initialize_from_data(self, values):
        """Sets this step's parameters from `values`, the data reaching it (its data side).

        Called eagerly by `FlowModel.initialize_from_data` (and `fit`) while
        `needs_data_initialization`; steps that initialise from data
        (`ActNormLayer`) override it.
        """

    def walk(self):
        """This flow layer and the flow layers inside it (a multi-scale layer's steps)."""
        yield self

    def inverse_visiting(self, values, visit, **kwargs):
        """The bijector's inverse of values, calling visit(layer, values) for each flow layer
        first with the values reaching it (for data-dependent initialisation)."""
        visit(self, values)
        return self.bijector.inverse(values, **kwargs)

    def check_data(self, x, argument="x"):
        """Raises a ValueError if data values are outside this step's domain.

        `FlowModel` calls it on the layer nearest the data, for in-memory data
        given to `fit`, `evaluate` and `log_prob`; most steps accept any value.
        """

    @property
    def support(self):
        """(low, high) when this step, nearest the data, maps onto the open box (low, high)^D.

        None (the default) for steps onto the whole space. `FlowModel.log_prob`
        gives -inf outside it (density 0), and `inverse` NaN.
        """
        return None

    @property
    def bijector(self):
        if not self.built:
            raise ValueError(
                f"{self.name} is not built yet: its bijector exists once the "
                "layer knows the event size (build it, or add it to a FlowModel)."
            )
        return self._bijector

    def call(self, inputs, context=None):
        if self.conditional:
            return self.bijector.forward(inputs, context=context)
        return self.bijector.forward(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["dtype"] = keras.dtype_policies.serialize(self.network_dtype_policy)
        if self.conditional:
            config["context_size"] = self.context_size
        return config
