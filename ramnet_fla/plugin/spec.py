"""The plugin contract: the hooks a ramnet_fla plugin may implement.

A plugin is any module or object with functions marked `@ramnet_fla.hookimpl` whose names are the
hooks below. Install it as a distribution that declares an entry point in the group `ramnet_fla`:

    # pyproject.toml of your plugin
    [project.entry-points.ramnet_fla]
    my_mixers = "my_package.plugin"

and the plugin manager finds it. ramnet_fla's own mixers (`ram`, `gla`, `deltanet`,
`gated_deltanet`, `attention`) are plugins of exactly this kind (`ramnet_fla/plugins/`), registered
directly rather than through entry points.

Every hook is called with keyword arguments; an implementation may accept any subset of them.
"""

from __future__ import annotations

from ramnet_fla.plugin import hookspec


@hookspec
def ramnet_fla_register_mixers(register):
    """Add token mixers: call `register` once per mixer.

    `register(name, factory, *, description="", state_size=None)`:

    - `name` (str): what configs write in `mixers`, e.g. `"my_mixer"` or `{"name": "my_mixer", ...}`.
      Names are unique across plugins; a second plugin registering a taken name is reported and ignored.
    - `factory`: called as `factory(hidden_size=..., layer_idx=..., **spec_kwargs)`, where
      `spec_kwargs` are the other keys of the layer's spec dict. It returns an `nn.Module` with fla's
      layer contract: `forward(hidden_states [B, T, hidden_size], attention_mask=None,
      past_key_values=None, use_cache=False, output_attentions=False, **kwargs)` returns
      `(output [B, T, hidden_size], attentions or None, past_key_values)`, keeps its decoding state in
      fla's `Cache` under its `layer_idx`, and honours `kwargs['cu_seqlens']` for packed input.
    - `description` (str): one line, shown by `ramnet-fla mixers`.
    - `state_size`: optional `state_size(hidden_size=..., seq_len=..., **spec_kwargs)` returning
      `{"total": int, "active": int}`: the state entries one sequence keeps after `seq_len` tokens, and
      those one decoding step reads or writes (see `ramnet_fla.state_size`).

    Example::

        @ramnet_fla.hookimpl
        def ramnet_fla_register_mixers(register):
            register("my_mixer", MyMixer, description="what it does")
    """


@hookspec(firstresult=True)
def ramnet_fla_select_mixer(config, layer_idx):
    """Choose the mixer of layer `layer_idx` of a model built from `config`, or return None.

    Return a mixer name or a spec dict `{"name": ..., **kwargs}` to override what `config.mixers`
    says for this layer. The first plugin that returns something other than None wins (plugins
    registered later are asked first, and the ones after the winner are not asked); when all return
    None the config decides. Make it a pure function of its arguments: the model, the config's
    `mixer_for_layer` and the state accounting all ask it, and it may be asked again to name the
    plugin behind an invalid answer.

    Example: attention in every fourth layer of configs that ask for it::

        @ramnet_fla.hookimpl
        def ramnet_fla_select_mixer(config, layer_idx):
            if getattr(config, "attention_every", None) and layer_idx % config.attention_every == 3:
                return "attention"
            return None
    """
