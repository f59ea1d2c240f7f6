"""Drawing: everything that turns maps into pictures, apart from the core (which never imports it for its
computing) and from the panel's widgets.

- :mod:`.masks`: raw attributions as greyscale or diverging masks (``sw.to_grayscale``, ``sw.to_diverging``);
- :mod:`.scaling`: one scale per image, per method or shared across the grid;
- :mod:`.grid`: which maps the grid shows and how (:class:`~.grid.GridView`, :class:`~.grid.Look`);
- :mod:`.titles`: the words above a column;
- :mod:`.render`: the grid's layout (:func:`~.render.grid_layout`) and its Pillow painter;
- :mod:`.figure`: the same layout painted with matplotlib; :mod:`.plot`: ``sw.plot_grid``.

Importing the package imports none of its modules: Pillow and matplotlib load when a picture is drawn.
"""
