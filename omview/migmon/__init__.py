"""openmosixmigmon: the migration monitor - nodes as penguins, processes as squares that move."""
