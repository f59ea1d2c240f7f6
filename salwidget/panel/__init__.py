"""The Jupyter panel, one module per concern.

The Evaluate view (deletion/insertion curves, sanity checks) is to join as a
module of its own, shown beside the grid view.

- :mod:`.widget`: ``SaliencyWidget``: controls mirrored with traits, the glue;
- :mod:`.traits`: the panel's traits and their validators (pages included);
- :mod:`.checks`: what each trait accepts (refused values raise TraitError);
- :mod:`.method_options`: each method's option values, from the registry;
- :mod:`.controls`: the ipywidgets controls, with tooltips and usable widths;
- :mod:`.worker`: the worker thread, generations, cancel, atomic publishing;
- :mod:`.view`, :mod:`.scaling`: which maps the grid shows and how they look;
- :mod:`.classes`: class labels, search and row titles;
- :mod:`.status`: the words of the status line;
- :mod:`.notes`: warnings under the grid (sanity check, completeness gap, changed weights);
- :mod:`.files`: downloads and uploads;
- :mod:`.snapshot`: the PNG kept in the notebook for static viewers.
"""

from .widget import SaliencyWidget

__all__ = ["SaliencyWidget"]
