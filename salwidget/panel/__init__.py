"""The Jupyter panel, one module per concern.

The Evaluate view (deletion/insertion curves, sanity checks) takes the grid's
place when its toggle (or ``w.pane = 'evaluate'``) shows it.

- :mod:`.widget`: ``SaliencyWidget``: a shell that builds the host and the views, keeps the traits;
- :mod:`.host`: ``PanelHost``: what the views share (images, worker, status line, Stop/Compute, errors, page, cache);
- :mod:`.settings_view`: the method, option, target and look controls;
- :mod:`.map_cache`: the attributions behind the panel (``Explorer``), keyed by settings and weights;
- :mod:`.traits`: the panel's traits and their validators (pages included);
- :mod:`.checks`: what each trait accepts (refused values raise TraitError);
- :mod:`.method_options`: each method's option values, from the registry;
- :mod:`.controls`: the ipywidgets controls, with tooltips and usable widths;
- :mod:`.worker`: the worker thread, generations, cancel, atomic publishing;
- :mod:`.maps_pane`: the Maps view (its drawing is in :mod:`salwidget.drawing`);
- :mod:`.classes`: class labels, search and row titles;
- :mod:`.status`: the words of the status line;
- :mod:`.notes`: warnings under the grid (sanity check, completeness gap, changed weights);
- :mod:`.files`: downloads and uploads;
- :mod:`.snapshot`: the PNG kept in the notebook for static viewers;
- :mod:`.evaluate_pane`: the Evaluate view's controls, requests and picture;
- :mod:`.evaluate`: what it computes (curves, sanity checks), cached, in the worker;
- :mod:`.evaluation_plot`: its picture (matplotlib Agg and the grid's renderer).
"""

from .widget import SaliencyWidget

__all__ = ["SaliencyWidget"]
