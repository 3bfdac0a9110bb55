"""SEN12MS-CR-TS data layer: layout, reading, cloud masks and their cache, index, samplers."""
