//! A dense row-major matrix of numbers with named columns: what preprocessing gives a learner.

/// Rows × columns of `f64`, row-major; `NaN` is a missing value where a learner takes them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matrix {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// The values, row after row.
    pub data: Vec<f64>,
    /// A name a column.
    pub names: Vec<String>,
}

impl Matrix {
    /// A matrix of `rows` rows from its columns.
    pub fn from_columns(rows: usize, columns: Vec<(String, Vec<f64>)>) -> Matrix {
        let cols = columns.len();
        let mut data = vec![0.0; rows * cols];
        for (j, (_, c)) in columns.iter().enumerate() {
            for (i, &v) in c.iter().enumerate() {
                data[i * cols + j] = v;
            }
        }
        Matrix {
            rows,
            cols,
            data,
            names: columns.into_iter().map(|(n, _)| n).collect(),
        }
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Column `j`, copied.
    pub fn column(&self, j: usize) -> Vec<f64> {
        (0..self.rows).map(|i| self.data[i * self.cols + j]).collect()
    }

    /// The rows `rows`, in their order.
    pub fn take_rows(&self, rows: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(rows.len() * self.cols);
        rows.iter().for_each(|&r| data.extend_from_slice(self.row(r)));
        Matrix {
            rows: rows.len(),
            cols: self.cols,
            data,
            names: self.names.clone(),
        }
    }

    /// The columns `cols`, in their order.
    pub fn take_cols(&self, cols: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(self.rows * cols.len());
        for i in 0..self.rows {
            let row = self.row(i);
            data.extend(cols.iter().map(|&j| row[j]));
        }
        Matrix {
            rows: self.rows,
            cols: cols.len(),
            data,
            names: cols.iter().map(|&j| self.names[j].clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_rows_and_selections() {
        let m = Matrix::from_columns(2, vec![("a".into(), vec![1.0, 2.0]), ("b".into(), vec![3.0, 4.0])]);
        assert_eq!(m.data, [1.0, 3.0, 2.0, 4.0]);
        assert_eq!(m.row(1), [2.0, 4.0]);
        assert_eq!(m.column(1), [3.0, 4.0]);
        assert_eq!(m.take_rows(&[1]).data, [2.0, 4.0]);
        let b = m.take_cols(&[1]);
        assert_eq!((b.data.clone(), b.names.clone()), (vec![3.0, 4.0], vec!["b".to_string()]));
    }
}
