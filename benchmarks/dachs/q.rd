<?xml version="1.0" encoding="utf-8"?>
<!-- The peer of skyledger's query service in benchmarks/tap_peers.py: the columns of
catalog.spectra that a TAP client reads, as one DaCHS table with a q3c index on ra/dec
(DaCHS's ADQL translator turns CONTAINS(POINT, CIRCLE) into q3c_join on it).

The schema is named "catalog" so that the benchmark sends the very same ADQL text
(FROM catalog.spectra) to both services. The rows come from data/spectra.csv, which
`tap_peers.py prepare` writes (the same seeded rows it copies into skyledger).
Set up with benchmarks/dachs/setup.sh. -->
<resource schema="catalog" resdir="skybench">
  <meta name="title">skyledger benchmark: spectra</meta>
  <meta name="description">One million synthetic catalogue entries (no pixels), the same
    rows a skyledger database serves as catalog.spectra, for the TAP benchmark.</meta>
  <meta name="creationDate">2026-12-07T23:30:00Z</meta>
  <meta name="subject">spectroscopy</meta>
  <meta name="creator.name">skyledger benchmarks</meta>

  <table id="spectra" onDisk="True" adql="True" mixin="//scs#q3cindex"
      primary="spectrum_id">
    <meta name="description">Every spectrum (synthetic catalogue entries)</meta>
    <column name="spectrum_id" type="bigint" required="True"
      ucd="meta.id;meta.main" description="Spectrum identifier"/>
    <column name="survey" type="text" ucd="meta.id"
      description="Short unique survey name"/>
    <column name="object_id" type="text" ucd="meta.id"
      description="The survey's own identifier of the spectrum"/>
    <column name="ra" type="double precision" unit="deg"
      ucd="pos.eq.ra;meta.main" description="Right ascension (ICRS)"/>
    <column name="dec" type="double precision" unit="deg"
      ucd="pos.eq.dec;meta.main" description="Declination (ICRS)"/>
    <column name="z" type="double precision" ucd="src.redshift"
      description="Input redshift given by the survey"/>
    <column name="n_pix" type="integer" required="True"
      description="Number of pixels; 0 for a catalogue entry without pixels"/>
    <column name="flux_unit" type="text"
      description="Unit of flux (astropy string)"/>
    <column name="wave_min" type="double precision" unit="Angstrom"
      ucd="em.wl;stat.min" description="Wavelength of the first pixel, vacuum"/>
    <column name="wave_max" type="double precision" unit="Angstrom"
      ucd="em.wl;stat.max" description="Wavelength of the last pixel, vacuum"/>
  </table>

  <data id="import">
    <sources>data/spectra.csv</sources>
    <csvGrammar/>
    <make table="spectra">
      <rowmaker idmaps="*"/>
    </make>
  </data>
</resource>
