-- One database per service: no service reads another's tables.
CREATE DATABASE catalog OWNER caj;
CREATE DATABASE requests OWNER caj;
CREATE DATABASE notifications OWNER caj;
