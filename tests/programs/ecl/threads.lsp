;;; ECL threads (mp:process-run-function / mp:process-join) allocating at
;;; once, explicit full collections, shared hash tables behind a lock, and
;;; string streams. Prints only what the computation determines.

(defun make-items (id round)
  ;; A fresh list of 300 numbers, some boxed (bignums), some strings.
  (loop for i below 300
        collect (if (zerop (mod i 3))
                    (format nil "~d-~d" id i)
                    (* (+ i id) (+ round 1) most-positive-fixnum))))

(defun item-value (item)
  (if (stringp item) (length item) (mod item 1000003)))

(defun work (id)
  ;; Builds and drops structures so that collections happen while the
  ;; other threads run; the result depends only on ID.
  (let ((sum 0))
    (dotimes (round 100)
      (let* ((items (make-items id round))
             (vec (coerce items 'vector)))
        (when (zerop (mod round 25)) (ext:gc t))
        (setf sum (mod (+ sum (reduce #'+ items :key #'item-value)
                          (length (princ-to-string (aref vec (mod round 300)))))
                       1000000007))))
    sum))

(let ((processes (loop for id below 8
                       collect (let ((id id))
                                 (mp:process-run-function
                                  (format nil "worker-~d" id)
                                  (lambda () (work id)))))))
  (loop for id from 0
        for process in processes
        do (format t "thread ~d: ~d~%" id (mp:process-join process))))

(format t "simple join: ~a~%"
        (mp:process-join (mp:process-run-function 'answer (lambda () 42))))

;;; A hash table shared by four threads behind a lock.
(defvar *table* (make-hash-table :test #'equal))
(defvar *lock* (mp:make-lock :name "table"))

(let ((writers (loop for id below 4
                     collect (let ((id id))
                               (mp:process-run-function
                                'writer
                                (lambda ()
                                  (dotimes (i 8000)
                                    (let ((key (format nil "~d/~d" id i)))
                                      (mp:with-lock (*lock*)
                                        (setf (gethash key *table*) (list id i key))))
                                    (when (zerop (mod i 2000)) (si:gc t)))))))))
  (mapc #'mp:process-join writers))
(si:gc t)
(format t "table: ~d entries, ~d wrong~%"
        (hash-table-count *table*)
        (loop for id below 4
              sum (loop for i below 8000
                        count (let ((key (format nil "~d/~d" id i)))
                                (not (equal (gethash key *table*) (list id i key)))))))

;;; String streams, many of them.
(let ((strings (loop for i below 5000
                     collect (with-output-to-string (out)
                               (format out "item ~d: ~s~%" i (list i (* i i) (format nil "~b" i)))))))
  (format t "strings: ~d, ~d chars, ~d read back~%"
          (length strings)
          (reduce #'+ strings :key #'length)
          (loop for s in strings
                count (with-input-from-string (in s)
                        (and (eq (read in) 'item) (integerp (parse-integer (read-line in) :junk-allowed t)))))))

;;; Many short-lived threads, two at a time.
(format t "short-lived threads: ~d~%"
        (loop for i below 100
              sum (let ((a (mp:process-run-function 'a (lambda () (length (make-string i)))))
                        (b (mp:process-run-function 'b (lambda () (length (make-list i))))))
                    (+ (mp:process-join a) (mp:process-join b)))))
(ext:gc t)
(format t "done~%")
